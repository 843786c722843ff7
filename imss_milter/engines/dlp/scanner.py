"""Scanning a text for every identifier: patterns find candidates, validators keep the real ones.

All keywords (of every keyword identifier, and the context words of
expressions) are ONE trie-shaped alternation (textmatch.TextMatcher), so
the cost barely grows with their number (the bench: 100x the keywords,
about 2x the time). Expression identifiers are few and each is a cheap
pass of its own (see _Expressions for why not one alternation). Only
candidates reach the validators (Luhn, mod-97...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex

from ...textmatch import TextMatcher
from .identifiers import ExpressionIdentifier, KeywordIdentifier, Match

# Matches kept per identifier and text: enough for any min_count, and a bound for hostile text.
MAX_MATCHES_PER_IDENTIFIER = 1000
_CONTEXT_PREFIX = "context:"


@dataclass
class TextScan:
    """What one text holds: identifier name -> matches in text order."""

    matches: dict[str, list[Match]] = field(default_factory=dict)
    timed_out: bool = False             # an admin expression hit its time limit; matches may be missing

    def count(self, identifier: str) -> int:
        return len(self.matches.get(identifier, ()))


def _squeeze(text: str) -> str:
    return " ".join(text.split())


class _Expressions:
    """Expression identifiers, each compiled once with the `regex` module.

    Each runs as its own pass: the engine's literal and first-character
    optimisations then skip most of the text, and 13 such passes over
    100 KB took 25 ms where one alternation of the same patterns took
    270 ms (every branch tried at every position). It also means two
    identifiers can match the same characters (an admin pattern over
    digits and a card number).
    """

    def __init__(self, identifiers: list[ExpressionIdentifier], timeout: float | None):
        self.timeout = timeout
        self.compiled = [(identifier, regex.compile(identifier.pattern if identifier.case_sensitive
                                                    else f"(?i:{identifier.pattern})", regex.V0))
                         for identifier in identifiers]

    def candidates(self, text: str):
        """(identifier, start, end, text) of each candidate; raises TimeoutError past the time limit."""
        for identifier, compiled in self.compiled:
            for found in compiled.finditer(text, timeout=self.timeout):
                if found.end() > found.start():
                    yield identifier, found.start(), found.end(), found.group()


class Scanner:
    """Every text identifier of a DLP configuration, compiled once; scan() from any thread."""

    def __init__(self, identifiers: dict, regex_timeout: float = 0.25, predefined_names=frozenset()):
        expressions = [i for i in identifiers.values() if isinstance(i, ExpressionIdentifier)]
        self.expressions = {i.name: i for i in expressions}
        self._builtin = _Expressions([i for i in expressions if i.name in predefined_names], None)
        self._admin = _Expressions([i for i in expressions if i.name not in predefined_names], regex_timeout)
        # keyword text (as matched) -> identifiers listing it, one matcher per case sensitivity
        self._keyword_owners: dict[bool, list[list[str]]] = {}
        self._keyword_matchers: dict[bool, TextMatcher] = {}
        words: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
        for identifier in identifiers.values():
            if isinstance(identifier, KeywordIdentifier):
                owned = words[identifier.case_sensitive]
                for item in identifier.items:
                    key = _squeeze(item) if identifier.case_sensitive else _squeeze(item).lower()
                    owned.setdefault(key, []).append(identifier.name)
            elif isinstance(identifier, ExpressionIdentifier) and identifier.context:
                for item in identifier.context:
                    words[False].setdefault(_squeeze(item).lower(), []).append(_CONTEXT_PREFIX + identifier.name)
        for case_sensitive, owned in words.items():
            if owned:
                keys = list(owned)
                self._keyword_matchers[case_sensitive] = TextMatcher(keys, (), case_sensitive, regex_timeout)
                self._keyword_owners[case_sensitive] = [owned[key] for key in keys]

    def scan(self, text: str, folded: str | None = None) -> TextScan:
        result = TextScan()
        if not text:
            return result
        found: dict[str, list[Match]] = {}
        self._scan_keywords(text, folded, found)
        for expressions in (self._builtin, self._admin):
            try:
                for identifier, start, end, candidate in expressions.candidates(text):
                    bucket = found.setdefault(identifier.name, [])
                    if len(bucket) >= MAX_MATCHES_PER_IDENTIFIER:
                        continue
                    for value in identifier.values(candidate):
                        bucket.append(Match(identifier.name, start, end, value, identifier.mask(value)))
            except TimeoutError:
                result.timed_out = True
        for name, identifier in self.expressions.items():
            if identifier.context and name in found:
                found[name] = _near_context(found[name], found.get(_CONTEXT_PREFIX + name, []),
                                            identifier.context_window)
        result.matches = {name: matches for name, matches in found.items()
                          if matches and not name.startswith(_CONTEXT_PREFIX)}
        return result

    def _scan_keywords(self, text: str, folded: str | None, found: dict) -> None:
        for case_sensitive, matcher in self._keyword_matchers.items():
            owners = self._keyword_owners[case_sensitive]
            searched = matcher.search(text, None if case_sensitive else folded)
            for hit in searched.hits:
                for name in owners[hit.item]:
                    bucket = found.setdefault(name, [])
                    if len(bucket) < MAX_MATCHES_PER_IDENTIFIER:
                        # a keyword is the admin's own word, not the sender's data: shown as written
                        bucket.append(Match(name, hit.start, hit.end, hit.text, hit.text))


def _near_context(matches: list[Match], context: list[Match], window: int) -> list[Match]:
    """The matches that have a context keyword within `window` characters before or after them."""
    if not context:
        return []
    kept = []
    for match in matches:
        if any(c.end <= match.start and match.start - c.end <= window
               or c.start >= match.end and c.start - match.end <= window for c in context):
            kept.append(match)
    return kept


def compile_check(pattern: str, case_sensitive: bool) -> str | None:
    """Why an admin pattern cannot be used (None when it can): it must compile and hold no named groups."""
    try:
        compiled = regex.compile(pattern if case_sensitive else f"(?i:{pattern})", regex.V0)
    except (regex.error, TypeError, ValueError, OverflowError) as exc:
        return f"bad regular expression {pattern!r}: {exc}"
    if compiled.groupindex:
        return f"named groups are not allowed in {pattern!r} (use (?:...))"
    if re.search(r"\\[1-9]", pattern):
        return f"backreferences are not allowed in {pattern!r}"
    if compiled.match("") is not None:
        return f"{pattern!r} matches the empty string"
    return None
