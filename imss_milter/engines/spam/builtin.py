"""The built-in spam backend: sums the scores of the pattern rules that match a message.

Rules come from the `spam` pattern component (rules.py). Each rule counts
once per message whatever the number of matches; a search that runs out of
its time limit scores nothing and leaves a note.
"""

from __future__ import annotations

import re

import regex

from ...prefilter import Prefilter
from ...textmatch import anchored_finditer, url_starts
from .engine import MESSAGE_RAW_KEY, RuleHit, SpamEngine, SpamResult

# rule types searched in one long text each: a Hyperscan prefilter says which rules can match it
PREFILTERED_TYPES = ("body", "raw")

# URLs as a reader sees them: in the text, and in HTML attributes the text no longer shows
_URL = re.compile(r"""(?i)\b(?:https?|ftp)://[^\s"'<>()\[\]{}\\^`|]+""")
MAX_URLS = 1000


class BuiltinSpamEngine(SpamEngine):
    def __init__(self, config, rules, options=None):
        super().__init__(config, options)
        self.rules = list(rules)
        # type -> (prefilter of its rules, {id(rule): index}); the other types' texts are short
        self.prefilters = {}
        for kind in PREFILTERED_TYPES:
            of_kind = [rule for rule in self.rules if rule.type == kind]
            if of_kind:
                prefilter = Prefilter([(rule.pattern.pattern, bool(not rule.pattern.flags & regex.IGNORECASE))
                                       for rule in of_kind])
                if prefilter.active:
                    self.prefilters[kind] = (prefilter, {id(rule): index for index, rule in enumerate(of_kind)})

    def score_message(self, model, envelope, scratch: dict) -> SpamResult:
        result = SpamResult()
        texts = MessageTexts(model, scratch)
        timeout = self.config.regex_timeout
        possible = {}       # type -> indexes of its rules that may match (one scan of the text)
        for rule in self.rules:
            prefiltered = self.prefilters.get(rule.type)
            if prefiltered is not None:
                prefilter, indexes = prefiltered
                if rule.type not in possible:
                    (text,) = texts.of(rule)
                    possible[rule.type] = prefilter.candidates(text, len(indexes))
                if indexes[id(rule)] not in possible[rule.type]:
                    continue        # the prefilter saw no match of this rule anywhere in the text
            matched = False
            for text in texts.of(rule):
                found = rule.search(text, timeout)
                if found is None:
                    result.notes.append(f"rule {rule.name} timed out after {timeout:g}s; not scored")
                    break
                if found:
                    matched = True
                    break
            if matched:
                result.hits.append(RuleHit(rule.name, rule.score, rule.description))
                result.score += rule.score
        return result


class MessageTexts:
    """The texts rules search, each made once per message and only when a rule asks for it."""

    def __init__(self, model, scratch: dict):
        self.model = model
        self.scratch = scratch
        self._raw: str | None = None
        self._urls: list[str] | None = None

    def of(self, rule) -> list[str]:
        if rule.type == "header":
            return self.model.header_values(rule.header)
        if rule.type == "body":
            return [self.model.body_text]
        if rule.type == "raw":
            return [self.raw()]
        return self.urls()

    def raw(self) -> str:
        if self._raw is None:
            self._raw = raw_text(self.model, self.scratch)
        return self._raw

    def urls(self) -> list[str]:
        if self._urls is None:
            self._urls = message_urls(self.model)
        return self._urls


def raw_text(model, scratch: dict) -> str:
    """The message as text: its raw bytes when the runtime gave them, else the decoded headers and body."""
    raw = scratch.get(MESSAGE_RAW_KEY)
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", "replace")
    headers = "\n".join(f"{name}: {value}" for name, value in model.headers)
    bodies = [decode_part(part) for part in model.parts if part.is_text_body] or [model.body_text]
    return headers + "\n\n" + "\n".join(bodies)


def message_urls(model) -> list[str]:
    """Distinct URLs of the body text and of the text body parts (HTML links included), in order."""
    seen: dict[str, None] = {}
    sources = [model.body_text]
    for part in model.parts:
        if part.is_text_body:
            sources.append(decode_part(part))
    for text in sources:
        for match in anchored_finditer(_URL, text, url_starts(text)):
            seen.setdefault(match.group().rstrip(".,;:!?"), None)
            if len(seen) >= MAX_URLS:
                return list(seen)
    return list(seen)


def decode_part(part) -> str:
    """A text body part's source (HTML markup included) as text."""
    charset = part.charset if _known_charset(part.charset) else "utf-8"
    return part.payload.decode(charset, "replace")


def _known_charset(charset: str | None) -> bool:
    if not charset:
        return False
    try:
        "".encode(charset)
        return True
    except (LookupError, ValueError):
        return False
