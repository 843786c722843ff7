"""Keyword and expression matching over message text, with bounded cost.

A TextMatcher holds one list of keywords and/or regular expressions. All
keywords become ONE trie-shaped alternation, so the time to search a text
barely grows with the number of keywords; expressions run with the
`regex` module and a time limit, so a pathological pattern can never
stall a scanning thread. The policy engine and the DLP engine share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex

# How many matches a search collects at most: enough for any min_count or
# distance rule an admin writes, and a bound on memory for hostile text.
MAX_MATCHES = 10_000
_UNSPACED_SCRIPTS = re.compile("[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
_WHITESPACE = re.compile(r"\s+")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=|\\g<|\(\?\|")

# The regex module releases the GIL while it matches an immutable text unless told not to, and
# takes it back for every allocation of its backtracking stack. In a milter worker the other
# threads are connections waiting for the GIL, so each release is a hand-off between threads:
# three threads searching short texts spent 3.5 times the CPU of the same searches holding the
# GIL (futex calls were most of a worker's system time). Only a long text is worth letting go.
RELEASE_GIL_CHARS = 1 << 20


def concurrent(text) -> bool:
    """The `concurrent` argument of a regex-module search over text: release the GIL only when
    the text is long enough that other threads gain more than the hand-offs cost."""
    return len(text) >= RELEASE_GIL_CHARS


class PatternError(ValueError):
    """An expression does not compile; .index names the item."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Hit:
    """One match: which item (keyword index, or len(keywords) + expression index) and where."""

    item: int
    start: int
    end: int
    text: str


@dataclass
class SearchResult:
    hits: list[Hit] = field(default_factory=list)
    timed_out: bool = False     # an expression hit the time limit; hits may be incomplete


def _trie_pattern(words: list[str]) -> str:
    """A regex alternation shaped like a trie of words: shared prefixes are matched once."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = True

    def emit(node: dict) -> str:
        branches, single_chars = [], []
        for char in sorted(k for k in node if k):
            tail = emit(node[char])
            if char == " ":
                # a space in a keyword matches any run of white space (line breaks, tabs, double spaces)
                branches.append(r"\s+" + tail)
            elif tail:
                branches.append(re.escape(char) + tail)
            else:
                single_chars.append(re.escape(char))
        if len(single_chars) == 1:
            branches.append(single_chars[0])
        elif single_chars:
            branches.append("[" + "".join(single_chars) + "]")
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ("" in node) else "(?:" + "|".join(branches) + ")"
        return body + "?" if "" in node else body

    return emit(trie)


def _needs_boundary(char: str) -> bool:
    """Word characters need a word boundary, except in scripts written without spaces (CJK, Thai)."""
    return bool(re.match(r"\w", char)) and not _UNSPACED_SCRIPTS.match(char)


def _squeeze(text: str) -> str:
    """White space runs as one space: how keywords are stored and matched text is looked up."""
    return _WHITESPACE.sub(" ", text.strip())


def _keyword_regex(keywords: list[str]) -> re.Pattern | None:
    """One pattern for all keywords, word-boundary aware at ends made of word characters.

    "cvv" must not match inside "cvvx", but "c++" or "$$" have no word
    edge to respect; keywords are grouped by which edges need a boundary.
    Keywords are escaped literals, so the stdlib engine cannot backtrack
    badly here and is the faster one.
    """
    groups: dict[tuple[bool, bool], list[str]] = {}
    for word in keywords:
        if word:
            edges = (_needs_boundary(word[0]), _needs_boundary(word[-1]))
            groups.setdefault(edges, []).append(word)
    if not groups:
        return None
    alternatives = []
    for (word_start, word_end), words in sorted(groups.items()):
        alternatives.append(("(?<!\\w)" if word_start else "") + "(?:" + _trie_pattern(words) + ")"
                            + ("(?!\\w)" if word_end else ""))
    return re.compile("|".join(alternatives))


class TextMatcher:
    """Keywords and expressions compiled once; search() many times from any thread."""

    def __init__(self, keywords=(), expressions=(), case_sensitive: bool = False, timeout: float = 0.25):
        self.keywords = tuple(keywords)
        self.expressions = tuple(expressions)
        self.case_sensitive = case_sensitive
        self.timeout = timeout
        # keywords are matched on lower-cased text when case does not matter
        self._keyword_key = {self._fold(_squeeze(k)): i for i, k in reversed(list(enumerate(self.keywords)))}
        self._keyword_re = _keyword_regex(list(self._keyword_key))
        self._expression_res = self._compile_expressions()
        self._combined = self._combine_expressions()

    def _fold(self, text: str) -> str:
        return text if self.case_sensitive else text.lower()

    def _compile_expressions(self) -> list:
        flags = regex.V0 if self.case_sensitive else regex.V0 | regex.IGNORECASE
        compiled = []
        for index, expression in enumerate(self.expressions):
            try:
                compiled.append(regex.compile(expression, flags))
            except (regex.error, TypeError, ValueError, OverflowError) as exc:
                raise PatternError(index, f"bad regular expression {expression!r}: {exc}") from None
        return compiled

    def _combine_expressions(self):
        """All expressions in one pass when that is safe (no backreferences, no global flags)."""
        if len(self.expressions) < 2:
            return None
        if any(_BACKREFERENCE.search(e) or "(?" in e and re.search(r"\(\?[a-zA-Z]+\)", e)
               for e in self.expressions):
            return None
        flags = regex.V0 if self.case_sensitive else regex.V0 | regex.IGNORECASE
        try:
            return regex.compile("|".join(f"(?P<_e{i}>{e})" for i, e in enumerate(self.expressions)), flags)
        except (regex.error, ValueError, OverflowError):
            return None

    @property
    def item_count(self) -> int:
        return len(self.keywords) + len(self.expressions)

    def item_label(self, item: int) -> str:
        if item < len(self.keywords):
            return self.keywords[item]
        return self.expressions[item - len(self.keywords)]

    def search(self, text: str, folded: str | None = None, limit: int = MAX_MATCHES) -> SearchResult:
        """Every match in text, up to limit; folded is text.lower() if the caller has it already."""
        result = SearchResult()
        if not text:
            return result
        if self._keyword_re is not None:
            haystack = text if self.case_sensitive else (folded if folded is not None else text.lower())
            for match in self._keyword_re.finditer(haystack):
                found = _squeeze(match.group())
                result.hits.append(Hit(self._keyword_key[found], match.start(), match.end(), found))
                if len(result.hits) >= limit:
                    return result
        if self._expression_res:
            self._search_expressions(text, result, limit)
        return result

    def _search_expressions(self, text: str, result: SearchResult, limit: int) -> None:
        base = len(self.keywords)
        passes = ([(self._combined, None)] if self._combined is not None
                  else [(compiled, index) for index, compiled in enumerate(self._expression_res)])
        try:
            for compiled, index in passes:
                # the time limit is for the whole pass, so many small matches cannot add up either
                for match in compiled.finditer(text, timeout=self.timeout, concurrent=concurrent(text)):
                    if match.end() == match.start():
                        continue    # an empty match says nothing about the text
                    item = index if index is not None else int(match.lastgroup[2:])
                    result.hits.append(Hit(base + item, match.start(), match.end(), match.group()))
                    if len(result.hits) >= limit:
                        return
        except TimeoutError:
            result.timed_out = True


def any_two_within(hits: list[Hit], distance: int) -> tuple[Hit, Hit] | None:
    """Two hits of DIFFERENT items whose gap (start of the later - end of the earlier) is <= distance."""
    ordered = sorted(hits, key=lambda h: (h.start, h.end))
    latest: Hit | None = None           # the last hit seen
    latest_other: Hit | None = None     # the last hit of an item other than latest's
    for hit in ordered:
        partner = latest if latest is not None and latest.item != hit.item else latest_other
        if partner is not None and hit.start - partner.end <= distance:
            return partner, hit
        if latest is not None and latest.item != hit.item:
            latest_other = latest
        latest = hit
    return None


# --- URLs in text, found from their literal anchors ----------------------------------------------

# Every URL pattern of the product starts with a scheme (http, https, ftp) right before "://",
# or with "www" (ASCII only: no other character matches w case-insensitively).
_SCHEME_LENGTHS = (5, 4, 3)            # https, http / httpſ..., ftp: where a match may start before "://"
_WWW = re.compile("(?i)(?=www)")         # every "www", overlapping ones too


def url_starts(text: str, www: bool = False):
    """Sorted offsets where a URL pattern's match may start: before each "://" (and at each "www").

    re and regex search a case-insensitive pattern that begins with an alternation position by
    position; str.find skips to the anchors in C (a tenth of the time on 10 KB of mail text)."""
    starts = []
    index = text.find("://")
    while index >= 0:
        starts.extend(index - length for length in _SCHEME_LENGTHS if index >= length)
        index = text.find("://", index + 3)
    if www:
        starts.extend(found.start() for found in _WWW.finditer(text))
        starts.sort()
    return starts


def anchored_finditer(pattern, text: str, starts):
    """What pattern.finditer(text) yields, for a pattern that never matches the empty string and
    whose matches all start at one of `starts` (sorted): the leftmost match, then the next one
    from its end, each tried only there."""
    position = 0
    for start in starts:
        if start < position:
            continue
        match = pattern.match(text, start)
        if match is not None:
            yield match
            position = match.end()
