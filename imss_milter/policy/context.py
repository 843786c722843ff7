"""Per-message evaluation state: the facts conditions read, caches, and notes that are not matches.

One EvalContext lives for one RuleSet.evaluate() call, so a list searched
by ten policies is searched once, and an engine asked by ten policies is
asked once. It also holds the hook that turns attachment bytes into text.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from ..mime.model import Limits, MessageModel, Part
from ..mime.text import html_to_text
from .types import Envelope

# Functions (part) -> str | None tried in order before the built-in text
# decoding; the DLP engine registers document extractors (PDF, OOXML...)
# here. None means "not mine"; an exception counts as "not mine" too.
TEXT_EXTRACTORS: list[Callable[[Part], str | None]] = []

_TEXT_TRUE_TYPES = ("text", "html", "email")
_NO_TEXT_TRUE_TYPES = ("archive", "image", "audio", "video")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t]{4,}")


def register_text_extractor(extractor: Callable[[Part], str | None]) -> None:
    """Add a document text extractor used by attachment.content (and DLP)."""
    if extractor not in TEXT_EXTRACTORS:
        TEXT_EXTRACTORS.append(extractor)


def part_text(part: Part, max_chars: int) -> str:
    """The searchable text of an attachment: decoded text, or printable runs of binary data.

    Printable runs (what `strings` shows) find words in uncompressed PDFs
    and legacy Office files until a real extractor is registered; archives
    and media are skipped because their members are parts of their own or
    they hold no words.
    """
    if part.inside_document:
        return ""       # the document's own extractor already read these words
    for extractor in TEXT_EXTRACTORS:
        try:
            text = extractor(part)
        except Exception:   # a broken extractor must not break the scan
            text = None
        if text is not None:
            return text[:max_chars]
    if part.encrypted or part.true_type in _NO_TEXT_TRUE_TYPES:
        return ""
    payload = part.payload[: max_chars * 4]
    if (part.true_type in _TEXT_TRUE_TYPES or part.declared_type.startswith("text/")
            or part.mime.startswith("text/")):
        text = _decode(payload, part.charset)
        if part.true_type == "html" or "html" in part.declared_type or part.mime == "text/html":
            text = html_to_text(text)
        return text[:max_chars]
    return "\n".join(run.decode("latin-1") for run in _PRINTABLE_RUN.findall(payload))[:max_chars]


def _decode(payload: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if candidate:
            try:
                return payload.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                continue
    return payload.decode("latin-1")


class EvalContext:
    """Facts and caches for evaluating one message against one rule set."""

    def __init__(self, envelope: Envelope, model: MessageModel, engines: Mapping[str, Any] | None,
                 limits: Limits):
        self.envelope = envelope
        self.model = model
        self.engines = engines or {}
        self.limits = limits
        self.rule: str | None = None            # the policy being evaluated, for notes
        self.notes: list[dict] = []             # findings that are not matches (timeouts, missing engines)
        self.search_cache: dict = {}
        self.engine_cache: dict = {}
        self.engine_scratch: dict = {}          # engines keep per-message state here (one scan, many asks)
        self._texts: dict = {}
        self._noted: set = set()
        self.sender = normalise_address(envelope.sender)
        self.recipients = [normalise_address(r) for r in envelope.recipients]
        # every part that is a file rather than body text: what attachment.* conditions look at
        self.file_parts = [p for p in model.parts if not p.is_text_body]

    def note(self, condition: str, detail: str, **extra) -> None:
        """Record a finding about the evaluation itself, once per rule and detail."""
        key = (self.rule, condition, detail)
        if key not in self._noted:
            self._noted.add(key)
            self.notes.append({"rule": self.rule, "condition": condition, "detail": detail, **extra})

    def text(self, target) -> tuple[str, str]:
        """(text, lower-cased text) of "subject", "body", ("header", name) or ("part", index)."""
        if target not in self._texts:
            self._texts[target] = self._load_text(target)
        return self._texts[target]

    def _load_text(self, target) -> tuple[str, str]:
        limit = self.limits.max_text_chars
        if target == "subject":
            text = self.model.subject
        elif target == "body":
            text = self.model.body_text
        elif target[0] == "header":
            text = "\n".join(self.model.header_values(target[1]))
        else:
            text = part_text(self.file_parts[target[1]], limit)
        text = text[:limit]
        return text, text.lower()


def normalise_address(address: str | None) -> str:
    return (address or "").strip().strip("<>").strip().lower()
