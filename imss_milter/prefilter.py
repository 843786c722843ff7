"""One Hyperscan scan of a text says which of many regular expressions may match it, and where.

Rules and identifiers are written for the `regex` module (version 0
syntax, as Python's `re`). Running each over a message costs a pass per
pattern; a Hyperscan database of all of them is one multi-pattern scan,
whatever their number. Hyperscan is only a PREFILTER here: it may report
more than the patterns match, never less, and every candidate is then
confirmed by the pattern itself. Three things keep it from reporting less:

* Hyperscan never reads the pattern's source. Python parses it
  (re._parser) and this module writes Hyperscan's pattern from that parse
  (_Writer), so a syntax the two read differently (`a{,3}`, `\\xe9`,
  `\\p{L}`, `[[:alpha:]]`) cannot slip through: what Python does not parse,
  or what the writer cannot express, is left out and its pattern runs on
  every text.
* Zero-width assertions (`\\b`, lookarounds) are dropped, atomic groups and
  possessive repeats become plain ones: each only widens the pattern.
* The databases are ASCII. A text that is not ASCII is scanned through its
  ASCII shadow (ascii_shadow): the same length, each other character
  replaced by one ASCII character that the pattern's classes treat alike.
  For that text a second database is used in which negated classes match
  any character (the shadow of a character outside `[^k]` may be `k`).
"""

from __future__ import annotations

import functools
import re
import re._constants as sre
import re._parser as sre_parse
import threading
import unicodedata

import regex

try:
    import hyperscan
except ImportError:     # every pattern then runs on every text
    hyperscan = None


class Prefilter:
    """Patterns [(pattern, case_sensitive)], compiled once; ends()/candidates() from any thread."""

    MAX_HITS = 50_000       # a text this dense in candidates is not prefiltered

    def __init__(self, patterns: list[tuple[str, bool]], anchored: bool = True):
        """anchored=False drops ^, $, \\A and \\Z too: a pattern then matches wherever in the text it
        matches a line of it, so one scan of several texts joined by newlines says which patterns
        may match one of them."""
        self.exact, self.shadow, self.accepted = prefilter_databases(tuple(patterns), anchored) \
            if hyperscan is not None else (None, None, {})
        self._index_of = {pattern_id: index for index, pattern_id in self.accepted.items()}
        self._left_out: dict[int, frozenset] = {}      # count -> indexes of the patterns not accepted
        # A hyperscan scratch serves one scan at a time. Idle ones wait here for the next scan of any
        # thread: pymilter gives every SMTP connection a thread state of its own, so a thread-local
        # scratch was allocated anew for every connection.
        self._idle: dict[int, list] = {}

    @property
    def active(self) -> bool:
        return self.exact is not None

    def ends(self, text: str) -> dict[int, list[int]] | None:
        """Pattern index -> sorted offsets where its matches may end, for each accepted pattern
        (an empty list: it cannot match); None when the text is not prefiltered (too many hits)."""
        if self.exact is None:
            return None
        hits: list[tuple[int, int]] = []

        def on_match(pattern_id, _start, end, _flags, _context):
            hits.append((pattern_id, end))
            return len(hits) > self.MAX_HITS        # True stops the scan

        self._scan(text, on_match)
        if len(hits) > self.MAX_HITS:
            return None
        by_id: dict[int, list[int]] = {pattern_id: [] for pattern_id in self.accepted.values()}
        for pattern_id, end in hits:
            by_id[pattern_id].append(end)
        return {index: sorted(by_id[pattern_id]) for index, pattern_id in self.accepted.items()}

    def candidates(self, text: str, count: int) -> set[int]:
        """Indexes (of `count` patterns) that may match text: every pattern the prefilter left out,
        and the accepted ones it found."""
        found = self._found(text)
        if found is None:
            return set(range(count))
        left_out = self._left_out.get(count)
        if left_out is None:
            left_out = self._left_out[count] = frozenset(range(count)) - frozenset(self.accepted)
        index_of = self._index_of
        return left_out.union([index_of[pattern_id] for pattern_id in found])

    def _found(self, text: str) -> set[int] | None:
        """The ids of the accepted patterns with a match in text (what ends() says has offsets),
        None when ends() would say None. The scan stops once every pattern was found."""
        if self.exact is None:
            return None
        found: set[int] = set()
        every = len(self.accepted)
        hits = [0]

        def on_match(pattern_id, _start, _end, _flags, _context):
            found.add(pattern_id)
            hits[0] += 1
            # past MAX_HITS ends() gives up; with every pattern found nothing more can be learnt
            return hits[0] > self.MAX_HITS or len(found) == every

        self._scan(text, on_match)
        if hits[0] > self.MAX_HITS:
            return None
        return found

    def _scan(self, text: str, on_match) -> None:
        """Run the database for text (the ASCII shadow's when text is not ASCII) with on_match; a
        scan that on_match stops (it returned True) ends quietly."""
        if text.isascii():
            database, data = self.exact, text
        else:
            database, data = self.shadow, ascii_shadow(text)
        _pooled_scan(database, self._idle.setdefault(id(database), []), data.encode("ascii"), on_match)


def _pooled_scan(database, idle: list, data: bytes, on_match) -> None:
    """database.scan(data) with a scratch from idle, given back afterwards; a scan that on_match
    stops (it returned True) ends quietly. A hyperscan scratch serves one scan at a time: idle ones
    wait in the list for the next scan of any thread."""
    try:
        scratch = idle.pop()        # list.pop and append are atomic: no lock needed
    except IndexError:
        scratch = hyperscan.Scratch(database)
    try:
        database.scan(data, match_event_handler=on_match, scratch=scratch)
    except hyperscan.ScanTerminated:
        pass                        # on_match stopped it
    finally:
        idle.append(scratch)


class LiteralSet:
    """Which of some ASCII literals occur in a byte string, ASCII case ignored, in one Hyperscan
    pass (each literal reported once). present() answers None where Hyperscan is missing or the
    database cannot be built; the caller then looks for each literal itself."""

    def __init__(self, literals: tuple[str, ...]):
        self.literals = tuple(literals)
        self.database = _literal_database(self.literals) if hyperscan is not None else None
        self._idle: list = []

    def present(self, data: bytes) -> set[str] | None:
        database = self.database
        if database is None:
            return None
        found: set[int] = set()
        _pooled_scan(database, self._idle, data, lambda pattern_id, _s, _e, _f, _c: found.add(pattern_id))
        literals = self.literals
        return {literals[pattern_id] for pattern_id in found}


def _literal_database(literals: tuple[str, ...]):
    if not literals or not all(literal.isascii() for literal in literals):
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(expressions=[literal.encode("ascii") for literal in literals],
                         ids=list(range(len(literals))), elements=len(literals),
                         flags=[hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH] * len(literals),
                         literal=True)
    except (hyperscan.error, TypeError):     # TypeError: a hyperscan without literal mode
        return None
    return database


# --- the ASCII shadow of a text ---------------------------------------------------------------

def ascii_shadow(text: str) -> str:
    """text with every non-ASCII character replaced by one ASCII character, offsets unchanged.

    The stand-in keeps what Python's Unicode classes say about the character: a digit of any
    script becomes the ASCII digit of its value (\\d), white space a space (\\s), a character that a
    case-insensitive pattern matches as an ASCII letter that letter (the Kelvin sign is k, the
    dotted capital and the dotless i are i), any other word character "_" (\\w, yet inside no letter range a
    pattern names) and the rest NUL (\\W, \\S, \\D, "."). Positive classes and literals that match
    the original then match the shadow; negated ones are widened in the shadow database.
    """
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda found: _shadow_of(found.group()), text)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@functools.lru_cache(maxsize=4096)
def _shadow_of(char: str) -> str:
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    if regex.match(r"\s", char):
        return " "
    # the letter the pattern engine itself matches it as (simple case folding: not always casefold())
    for letter in _ASCII_LETTERS:
        # [iI]: a class also catches a character one of whose case variants is the letter (dotless i)
        if regex.fullmatch(f"[{letter}{letter.upper()}]", char, regex.IGNORECASE | regex.V0):
            return letter
    if regex.match(r"\w", char):
        return "_"
    return "\x00"


# --- writing Hyperscan's pattern from Python's parse -----------------------------------------

class Unsupported(Exception):
    """The pattern holds something the writer cannot express exactly or more widely."""


# \d, \w and \s on ASCII. \s: the regex module's is [\t\n\v\f\r ], Python's re adds \x1c-\x1f; the
# class holds both and its negation neither, so the prefilter is wide enough for either engine.
_CATEGORIES = {
    sre.CATEGORY_DIGIT: "0-9",
    sre.CATEGORY_WORD: "0-9A-Za-z_",
    sre.CATEGORY_SPACE: "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ",
}
_NARROW_CATEGORIES = {**_CATEGORIES, sre.CATEGORY_SPACE: "\\t\\n\\x0b\\x0c\\r "}
_NOT_CATEGORIES = {     # spelled as the negation of these
    sre.CATEGORY_NOT_DIGIT: "0-9",
    sre.CATEGORY_NOT_WORD: "0-9A-Za-z_",
    sre.CATEGORY_NOT_SPACE: "\\t\\n\\x0b\\x0c\\r ",
}
_ANY_CHARACTER = "[\\x00-\\x7f]"
_SCOPED_FLAGS = {sre.SRE_FLAG_IGNORECASE: "i", sre.SRE_FLAG_DOTALL: "s"}
_IGNORED_FLAGS = sre.SRE_FLAG_UNICODE | sre.SRE_FLAG_VERBOSE     # VERBOSE is spent by the parse


class _Writer:
    """Hyperscan source for a parsed pattern. widen_negated: negated classes match anything;
    anchored=False: ^, $, \\A and \\Z are left out (only wider)."""

    def __init__(self, widen_negated: bool, anchored: bool = True):
        self.widen = widen_negated
        self.anchored = anchored

    def sequence(self, items) -> str:
        return "".join(self.item(op, av) for op, av in items)

    def item(self, op, av) -> str:
        if op is sre.LITERAL:
            return _char(av)
        if op is sre.NOT_LITERAL:
            return _ANY_CHARACTER if self.widen else "[^" + _class_char(av) + "]"
        if op is sre.ANY:
            return "."
        if op is sre.IN:
            return self.char_class(av)
        if op is sre.BRANCH:
            return "(?:" + "|".join(self.sequence(branch) for branch in av[1]) + ")"
        if op is sre.SUBPATTERN:
            _group, add, delete, items = av
            flags_on = self.scoped(add)
            flags_off = self.scoped(delete)
            modifiers = flags_on + ("-" + flags_off if flags_off else "")
            return "(?" + modifiers + ":" + self.sequence(items) + ")"
        if op is sre.ATOMIC_GROUP:
            return "(?:" + self.sequence(av) + ")"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, items = av
            bound = f"{{{low},}}" if high is sre.MAXREPEAT else f"{{{low},{high}}}"
            return "(?:" + self.sequence(items) + ")" + bound
        if op is sre.AT:
            # \b and \B are left out: only wider (and every anchor when unanchored)
            return _AT.get(av, "") if self.anchored else ""
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            return ""                    # lookarounds are left out: only wider
        raise Unsupported(str(op))

    def scoped(self, flags: int) -> str:
        flags &= ~_IGNORED_FLAGS
        letters = ""
        for flag, letter in _SCOPED_FLAGS.items():
            if flags & flag:
                letters += letter
                flags &= ~flag
        if flags:
            raise Unsupported(f"flags {flags}")
        return letters

    def char_class(self, members) -> str:
        negated = bool(members) and members[0][0] is sre.NEGATE
        if negated:
            if self.widen:
                return _ANY_CHARACTER
            members = members[1:]
        plain, negated_categories = "", []
        for op, av in members:
            if op is sre.LITERAL:
                plain += _class_char(av)
            elif op is sre.RANGE:
                plain += _class_char(av[0]) + "-" + _class_char(av[1])
            elif op is sre.CATEGORY and av in _CATEGORIES:
                # in a negated class the narrow spelling (\s as the regex module's): the negation is wider
                plain += _NARROW_CATEGORIES[av] if negated else _CATEGORIES[av]
            elif op is sre.CATEGORY and av in _NOT_CATEGORIES:
                negated_categories.append(_NOT_CATEGORIES[av])
            else:
                raise Unsupported(str(op))
        if negated:
            if negated_categories:
                raise Unsupported("negated class holding a negated category")
            return "[^" + plain + "]"
        # [\Wx]: a class of its own for each negated category, in an alternation
        pieces = (["[" + plain + "]"] if plain else []) + ["[^" + spelled + "]" for spelled in negated_categories]
        return pieces[0] if len(pieces) == 1 else "(?:" + "|".join(pieces) + ")"


_AT = {
    sre.AT_BEGINNING: "^", sre.AT_BEGINNING_STRING: "\\A",
    sre.AT_END: "$", sre.AT_END_STRING: "\\Z",        # PCRE's \Z also before a final newline: wider
}


def _char(code: int) -> str:
    if code > 0x7f:
        raise Unsupported("non-ASCII character")
    char = chr(code)
    return char if char.isalnum() else f"\\x{code:02x}"


def _class_char(code: int) -> str:
    if code > 0x7f:
        raise Unsupported("non-ASCII character")
    return f"\\x{code:02x}"


def hyperscan_source(pattern: str, case_sensitive: bool, widen_negated: bool = False,
                     anchored: bool = True) -> tuple[str, int] | None:
    """(source, hyperscan flags) of the prefilter for a `regex` V0 pattern, None when none can be
    written (the pattern then runs on every text)."""
    if hyperscan is None or _POSIX_CLASS.search(pattern) or _literal_brace(pattern):
        # the regex module reads [[:alpha:]] as a POSIX class and a `{` that is no repeat as a
        # fuzzy-matching constraint ((?:viagra){e<=1} matches "viagr4"), Python's parser as literals
        return None
    try:
        parsed = sre_parse.parse(pattern, 0 if case_sensitive else re.IGNORECASE)
        source = _Writer(widen_negated, anchored).sequence(list(parsed))
    except (re.error, Unsupported, RecursionError, OverflowError, ValueError, TypeError):
        return None
    flags = hyperscan.HS_FLAG_PREFILTER
    global_flags = parsed.state.flags
    if global_flags & re.IGNORECASE:
        flags |= hyperscan.HS_FLAG_CASELESS
    if global_flags & re.DOTALL:
        flags |= hyperscan.HS_FLAG_DOTALL
    if global_flags & re.MULTILINE:
        flags |= hyperscan.HS_FLAG_MULTILINE
    if global_flags & re.ASCII or global_flags & re.LOCALE:
        return None
    return source, flags


_POSIX_CLASS = re.compile(r"\[:\^?[A-Za-z]+:\]")
_ESCAPE_OR_BRACE = re.compile(r"\\.|\{", re.S)
_REPEAT = re.compile(r"\{(?:\d+(?:,\d*)?|,\d+)\}")      # a repeat both parsers read alike


def _literal_brace(pattern: str) -> bool:
    """Whether pattern has an unescaped `{` that does not open a plain repeat: Python's parser reads
    it as a literal brace, the regex module perhaps as a fuzzy constraint ({e<=1}, {i}, {1<=s<=2})
    that matches text the literal does not. Inside a class too: that only leaves a pattern out."""
    for found in _ESCAPE_OR_BRACE.finditer(pattern):
        if found.group() == "{" and not _REPEAT.match(pattern, found.start()):
            return True
    return False


# --- databases, cached: the same patterns compile once per process -----------------------------

# patterns -> (exact database, shadow database, {pattern index: hyperscan id})
_databases: dict[tuple, tuple] = {}
_databases_lock = threading.Lock()


def prefilter_databases(patterns: tuple[tuple[str, bool], ...], anchored: bool = True):
    key = patterns if anchored else ("unanchored", patterns)
    with _databases_lock:
        if key not in _databases:
            _databases[key] = _compile(patterns, anchored)
        return _databases[key]


def _compile(patterns, anchored: bool = True):
    entries = []        # (index, exact source, shadow source, flags)
    for index, (pattern, case_sensitive) in enumerate(patterns):
        exact = hyperscan_source(pattern, case_sensitive, anchored=anchored)
        shadow = hyperscan_source(pattern, case_sensitive, widen_negated=True, anchored=anchored)
        if exact is None or shadow is None:
            continue
        entries.append((index, exact[0], shadow[0], exact[1]))
    exact_db = _database([(source, flags) for _, source, _, flags in entries])
    shadow_db = _database([(source, flags) for _, _, source, flags in entries])
    if exact_db is None or shadow_db is None:
        # one pattern spoils the lot (too large, matches the empty string): keep the ones it takes
        entries = [entry for entry in entries
                   if _database([(entry[1], entry[3])]) is not None and _database([(entry[2], entry[3])]) is not None]
        exact_db = _database([(source, flags) for _, source, _, flags in entries])
        shadow_db = _database([(source, flags) for _, _, source, flags in entries])
    if exact_db is None or shadow_db is None:
        return None, None, {}
    if all(entry[1] == entry[2] for entry in entries):
        shadow_db = exact_db
    return exact_db, shadow_db, {index: pattern_id for pattern_id, (index, _, _, _) in enumerate(entries)}


def _database(variants: list[tuple[str, int]]):
    if not variants:
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(expressions=[source.encode("ascii") for source, _ in variants],
                         ids=list(range(len(variants))), elements=len(variants),
                         flags=[flags for _, flags in variants])
    except hyperscan.error:
        return None
    return database
