"""Scanning a text for every identifier: patterns find candidates, validators keep the real ones.

All keywords (of every keyword identifier, and the context words of
expressions) are ONE trie-shaped alternation (textmatch.TextMatcher), so
the cost barely grows with their number (the bench: 100x the keywords,
about 2x the time). Expression identifiers are few and each is a cheap
pass of its own (see _Expressions for why not one alternation). Only
candidates reach the validators (Luhn, mod-97...).
"""

from __future__ import annotations

import bisect
import re
import re._parser as sre_parse
import time
from dataclasses import dataclass, field

import regex

from ...prefilter import Prefilter, hyperscan
from ...textmatch import TextMatcher, concurrent
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


def _max_width(pattern: str, case_sensitive: bool) -> int | None:
    """The most characters a match can span, None when unbounded or unknown (regex-only syntax)."""
    try:
        width = sre_parse.parse(pattern, 0 if case_sensitive else re.IGNORECASE).getwidth()[1]
    except (re.error, TypeError, ValueError, OverflowError, RecursionError):
        return None
    return width if width < _UNBOUNDED else None


_UNBOUNDED = 1 << 16


class _Expressions:
    """Expression identifiers, each compiled once with the `regex` module, scanned in one pass.

    One `regex` alternation of every pattern is NOT that pass: the engine
    tries every branch at every position (13 patterns over 100 KB: 270 ms
    as one alternation, 25 ms as 13 passes). Instead a Hyperscan prefilter
    (imss_milter.prefilter) scans the text once for all of them and says where each
    identifier's matches may end; each identifier's own pattern then runs
    only there (guided_finditer), and finds exactly what a pass of its own
    would find: two identifiers can still match the same characters.
    Without Hyperscan, or for a pattern it refuses, a pattern gets its own
    pass (the regex engine's literal and first-character search keeps
    that cheap).
    """

    def __init__(self, identifiers: list[ExpressionIdentifier], timeout: float | None):
        self.timeout = timeout
        self.compiled = [(identifier, regex.compile(identifier.pattern if identifier.case_sensitive
                                                    else f"(?i:{identifier.pattern})", regex.V0),
                          _max_width(identifier.pattern, identifier.case_sensitive))
                         for identifier in identifiers]
        self.prefilter = (Prefilter([(i.pattern, i.case_sensitive) for i in identifiers])
                          if hyperscan is not None and identifiers else None)

    def candidates(self, text: str, single_pass: bool = True):
        """(identifier, start, end, text) of each candidate; raises TimeoutError past the time limit.

        single_pass=False runs every pattern over the whole text (the bench's baseline)."""
        ends = self.prefilter.ends(text) if single_pass and self.prefilter is not None else None
        for index, (identifier, compiled, width) in enumerate(self.compiled):
            hit_ends = ends.get(index) if ends is not None else None
            found = (compiled.finditer(text, timeout=self.timeout, concurrent=concurrent(text)) if hit_ends is None
                     else guided_finditer(compiled, text, hit_ends, width, self.timeout))
            for match in found:
                if match.end() > match.start():
                    yield identifier, match.start(), match.end(), match.group()


def guided_finditer(compiled, text: str, ends: list[int], width: int | None, timeout: float | None):
    """What compiled.finditer(text) yields (non-empty matches), searching only near `ends`.

    `ends` holds every offset where a match may end (sorted, more are fine).
    From position p, the next match ends at the first such offset e > p or
    later, and starts at most `width` characters before its end: so no match
    starts before e - width, and the search can begin there. No offset past
    p: no match is left. The time limit is for the whole pass, as finditer's.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    position = 0
    while True:
        following = bisect.bisect_right(ends, position)
        if following == len(ends):
            return
        start = position if width is None else max(position, ends[following] - width)
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("regular expression time limit")
        match = compiled.search(text, start, timeout=remaining, concurrent=concurrent(text))
        if match is None:
            return
        yield match
        # an empty match (a pattern that is empty somewhere) moves on one character, as finditer does
        position = match.end() if match.end() > match.start() else match.end() + 1


class Scanner:
    """Every text identifier of a DLP configuration, compiled once; scan() from any thread."""

    single_pass = True      # False: one pass per expression identifier (the bench's baseline)

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
                for identifier, start, end, candidate in expressions.candidates(text, self.single_pass):
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
