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
import functools
import re
import re._parser as sre_parse
import threading
import time
import unicodedata
from dataclasses import dataclass, field

import regex

try:
    import hyperscan
except ImportError:     # the scan then runs one pass per expression identifier
    hyperscan = None

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


class _Prefilter:
    """Every expression identifier that Hyperscan can approximate, in ONE database scanned once per text.

    Hyperscan's prefilter mode widens a pattern it cannot run exactly (it
    drops lookarounds), so a scan reports every offset where a match of
    the real pattern may END, and more. Scanning costs about the same for
    one pattern or fifty: it is a multi-pattern automaton, not a loop.
    Patterns it refuses (regex-only syntax, patterns that can match the
    empty string, non-ASCII characters) are left to a pass of their own.

    The database is ASCII: Unicode classes (\\d as every script's digits)
    made the built-in patterns take 3 s to compile against 0.5 s. A text
    that is not ASCII is scanned through its ASCII shadow (ascii_shadow):
    the same length, each other character replaced by an ASCII one that the
    classes Python's patterns use treat alike, so no candidate is lost.
    """

    MAX_HITS = 50_000       # a text this dense in candidates is scanned the old way, pattern by pattern

    def __init__(self, patterns: list[tuple[str, bool]]):
        self.database, self.accepted = _prefilter_database(tuple(patterns))
        self._threads = threading.local()       # a hyperscan scratch serves one scan at a time

    def ends(self, text: str) -> dict[int, list[int]] | None:
        """Pattern index -> sorted offsets where its matches may end, for each accepted pattern;
        None when the text cannot be prefiltered (not ASCII, or too many candidates)."""
        if self.database is None:
            return None
        text = ascii_shadow(text)
        if _PYTHON_ONLY_SPACE.search(text):
            return None
        scratch = getattr(self._threads, "scratch", None)
        if scratch is None:
            scratch = self._threads.scratch = hyperscan.Scratch(self.database)
        hits: list[tuple[int, int]] = []

        def on_match(pattern_id, _start, end, _flags, _context):
            hits.append((pattern_id, end))
            return len(hits) > self.MAX_HITS        # True stops the scan

        self.database.scan(text.encode("ascii"), match_event_handler=on_match, scratch=scratch)
        if len(hits) > self.MAX_HITS:
            return None
        by_id: dict[int, list[int]] = {pattern_id: [] for pattern_id in self.accepted.values()}
        for pattern_id, end in hits:
            by_id[pattern_id].append(end)
        return {index: sorted(by_id[pattern_id]) for index, pattern_id in self.accepted.items()}


def ascii_shadow(text: str) -> str:
    """text with every non-ASCII character replaced by one ASCII character, offsets unchanged.

    The stand-in keeps what Python's Unicode classes say about the character: a digit of any
    script becomes the ASCII digit of its value (\\d), white space a space (\\s), a character whose
    case folding is one ASCII letter that letter (IGNORECASE: the Kelvin sign is k), any other word
    character "_" (\\w, yet inside no letter range a pattern names) and the rest NUL (\\W, \\S, \\D,
    "."). A pattern matching the original then matches the shadow wherever it used those classes:
    the prefilter may only find more candidates, and candidates are checked on the original text.
    """
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda found: _shadow_of(found.group()), text)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=4096)
def _shadow_of(char: str) -> str:
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    if char.isspace():
        return " "
    folded = char.casefold()
    if len(folded) == 1 and folded.isascii() and folded.isalpha():
        return folded
    if regex.match(r"\w", char):
        return "_"
    return "\x00"


# ASCII characters Python's \s matches and Hyperscan's may not: a text holding one is not prefiltered
_PYTHON_ONLY_SPACE = re.compile("[\x0b\x1c-\x1f]")
_HS_FLAGS = hyperscan.HS_FLAG_PREFILTER if hyperscan is not None else 0
# (pattern, case_sensitive) tuple -> (database, {pattern index: hyperscan id}); the built-in
# identifiers' database takes half a second to compile and is the same for every rule set
_databases: dict[tuple, tuple] = {}
_databases_lock = threading.Lock()


def _prefilter_database(patterns: tuple[tuple[str, bool], ...]):
    with _databases_lock:
        if patterns not in _databases:
            _databases[patterns] = _compile_prefilter(patterns)
        return _databases[patterns]


def _compile_prefilter(patterns: tuple[tuple[str, bool], ...]):
    variants = [(index, _without_word_boundaries(pattern),
                 _HS_FLAGS | (0 if case_sensitive else hyperscan.HS_FLAG_CASELESS))
                for index, (pattern, case_sensitive) in enumerate(patterns) if pattern.isascii()]
    database = _hyperscan_database(variants)
    if database is None:        # one pattern spoils the lot: find the ones Hyperscan takes
        variants = [variant for variant in variants if _hyperscan_database([variant]) is not None]
        database = _hyperscan_database(variants)
    if database is None:
        return None, {}
    return database, {index: pattern_id for pattern_id, (index, _, _) in enumerate(variants)}


def _hyperscan_database(variants: list[tuple[int, str, int]]):
    if not variants:
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(expressions=[pattern.encode("ascii") for _, pattern, _ in variants],
                         ids=list(range(len(variants))), elements=len(variants),
                         flags=[flags for _, _, flags in variants])
    except hyperscan.error:
        return None
    return database


def _without_word_boundaries(pattern: str) -> str:
    """The pattern less its \\b and \\B outside character classes (Hyperscan refuses them in Unicode
    mode; inside a class \\b is a backspace). Dropping a zero-width assertion only widens what a
    pattern matches, which a prefilter may do."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index:index + 2]
            if not (escape in ("\\b", "\\B") and not in_class):
                out.append(escape)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            # a ] right after [ or [^ is a literal member, not the end of the class
            following = 2 if pattern[index + 1:index + 2] == "^" else 1
            if pattern[index + following:index + following + 1] == "]":
                out.append(pattern[index + 1:index + following + 1])
                index += following
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)


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
    (_Prefilter) scans the text once for all of them and says where each
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
        self.prefilter = (_Prefilter([(i.pattern, i.case_sensitive) for i in identifiers])
                          if hyperscan is not None and identifiers else None)

    def candidates(self, text: str, single_pass: bool = True):
        """(identifier, start, end, text) of each candidate; raises TimeoutError past the time limit.

        single_pass=False runs every pattern over the whole text (the bench's baseline)."""
        ends = self.prefilter.ends(text) if single_pass and self.prefilter is not None else None
        for index, (identifier, compiled, width) in enumerate(self.compiled):
            hit_ends = ends.get(index) if ends is not None else None
            found = (compiled.finditer(text, timeout=self.timeout) if hit_ends is None
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
        match = compiled.search(text, start, timeout=remaining)
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
