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
# rules searched in several short texts (the URLs, a header's values) get one prefilter scan of the
# texts joined by newlines, with the anchors left out, when at least this many rules share them
JOINED_PREFILTER_RULES = 2

# URLs as a reader sees them: in the text, and in HTML attributes the text no longer shows
_URL = re.compile(r"""(?i)\b(?:https?|ftp)://[^\s"'<>()\[\]{}\\^`|]+""")
MAX_URLS = 1000


def text_group(rule) -> str | tuple:
    """Which of the message's texts a rule searches: body, raw, url or ("header", lower-cased name)."""
    return ("header", rule.header.lower()) if rule.type == "header" else rule.type


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
        # the URLs and each header's values: several texts, prefiltered joined (unanchored)
        groups: dict = {}
        for rule in self.rules:
            if rule.type in ("url", "header"):
                groups.setdefault(text_group(rule), []).append(rule)
        for group, of_group in groups.items():
            if len(of_group) >= JOINED_PREFILTER_RULES:
                prefilter = Prefilter([(rule.pattern.pattern, bool(not rule.pattern.flags & regex.IGNORECASE))
                                       for rule in of_group], anchored=False)
                if prefilter.active:
                    self.prefilters[group] = (prefilter, {id(rule): index for index, rule in enumerate(of_group)})
        self._planned = (self.prefilters, self._plan())

    def _plan(self) -> list[tuple]:
        """(rule, its text group, (prefilter, rule count) or None, its index there) of every rule,
        in order: worked out once per rule set (again only if self.prefilters is replaced)."""
        plan = []
        for rule in self.rules:
            group = text_group(rule)
            prefiltered = self.prefilters.get(group)
            if prefiltered is None:
                plan.append((rule, group, None, None))
            else:
                prefilter, indexes = prefiltered
                plan.append((rule, group, (prefilter, len(indexes)), indexes[id(rule)]))
        return plan

    def score_message(self, model, envelope, scratch: dict) -> SpamResult:
        result = SpamResult()
        texts = MessageTexts(model, scratch)
        timeout = self.config.regex_timeout
        possible = {}       # text group -> indexes of its rules that may match (one scan of the text)
        planned = self._planned
        if planned[0] is not self.prefilters:
            planned = self._planned = (self.prefilters, self._plan())
        for rule, group, prefiltered, index in planned[1]:
            if prefiltered is not None:
                candidates = possible.get(group)
                if candidates is None:
                    candidates = possible[group] = texts.candidates(group, *prefiltered)
                if index not in candidates:
                    continue        # the prefilter saw no match of this rule anywhere in the text
            matched = False
            for text in texts.of_group(group):
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
        self._headers: dict[str, list[str]] = {}

    def of(self, rule) -> list[str]:
        return self.of_group(text_group(rule))

    def of_group(self, group) -> list[str]:
        if group == "body":
            return [self.model.body_text]
        if group == "raw":
            return [self.raw()]
        if group == "url":
            return self.urls()
        name = group[1]
        values = self._headers.get(name)
        if values is None:
            values = self._headers[name] = self.model.header_values(name)
        return values

    def candidates(self, group, prefilter: Prefilter, count: int) -> set[int]:
        """Indexes of the group's rules that may match one of its texts (the prefilter's answer)."""
        texts = self.of_group(group)
        if group == "body" or group == "raw":
            return prefilter.candidates(texts[0], count)
        if not texts:
            return set()            # nothing to search: no rule of the group can match
        # joined by newlines (no anchors in this prefilter): a match in one text is a match here
        return prefilter.candidates(texts[0] if len(texts) == 1 else "\n".join(texts), count)

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
