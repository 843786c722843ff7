"""The Hyperscan prefilter never reports less than the patterns match (imss_milter.prefilter).

Spam rules and DLP expressions are skipped or searched only where the
prefilter says they may match, so a miss here is a missed rule. The
property test writes random patterns from the syntax rules use and random
texts with the characters that make Unicode matching differ from ASCII.
"""

from __future__ import annotations

import random

import pytest
import regex

from imss_milter import prefilter
from imss_milter.engines.spam.builtin import BuiltinSpamEngine
from imss_milter.engines.spam.rules import load_rules, parse_rule_file
from imss_milter.yamlconf import loads_yaml

needs_hyperscan = pytest.mark.skipif(prefilter.hyperscan is None, reason="hyperscan is not installed")

ATOMS = ["a", "k", "i", "s", "x", "z", "K", "I", "S", "1", "4", " ", "-", ".", "_", r"\.", r"\-", "é"[:0] + "q",
         r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", ".", "[a-z]", "[^k]", "[^ ]", "[^_]", "[^4]", "[^a-z]",
         r"[\Wx]", r"[\d_]", r"[^\s]", "[A-Z0-9]", "[ks]", r"\bk", r"s\b", r"\Bi", "(?=k)", "(?<=s)", "(?!x)"]
QUANTIFIERS = ["", "", "", "+", "*", "?", "{2}", "{1,3}", "{,2}", "+?", "++"]
CHARACTERS = ["a", "k", "i", "s", "x", "z", "K", "I", "S", "1", "4", " ", "-", ".", "_", "\n",
              "\u0130", "\u0131", "\u212a", "\u017f", "\u00e9", "\u00a0", "\uff14", "\u0664", "\x1c",
              "\u2014", "\U0001F4B3", "\u00df", "\u0301"]


def random_pattern(rng: random.Random) -> str:
    def sequence(depth: int) -> str:
        items = []
        for _ in range(rng.randint(1, 4)):
            if depth < 2 and rng.random() < 0.2:
                body = "|".join(sequence(depth + 1) for _ in range(rng.randint(1, 3)))
                item = rng.choice(["(?:%s)", "(%s)", "(?i:%s)", "(?>%s)"]) % body
            else:
                item = rng.choice(ATOMS)
            items.append(item + rng.choice(QUANTIFIERS))
        return "".join(items)

    pattern = sequence(0)
    return rng.choice(["", "", "^", r"\A"]) + pattern + rng.choice(["", "", "$", r"\Z"])


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 30)))


def random_compiled_patterns(rng: random.Random, count: int, empty_matches: bool = True):
    """(pattern, case_sensitive, compiled) for `count` random patterns the regex module accepts;
    empty_matches=False leaves out those that match the empty string."""
    patterns = []
    while len(patterns) < count:
        pattern = random_pattern(rng)
        case_sensitive = rng.random() < 0.5
        try:
            compiled = regex.compile(pattern, regex.V0 if case_sensitive else regex.V0 | regex.IGNORECASE)
        except regex.error:
            continue
        if empty_matches or compiled.search("") is None:
            patterns.append((pattern, case_sensitive, compiled))
    return patterns


@needs_hyperscan
@pytest.mark.parametrize("seed", range(40))
def test_every_match_of_the_pattern_is_a_candidate(seed):
    rng = random.Random(seed)
    patterns = random_compiled_patterns(rng, 25, empty_matches=False)
    checker = prefilter.Prefilter([(pattern, case_sensitive) for pattern, case_sensitive, _ in patterns])
    assert checker.accepted, "the prefilter takes most of these patterns"
    for _ in range(60):
        text = random_text(rng)
        ends = checker.ends(text)
        for index, (pattern, case_sensitive, compiled) in enumerate(patterns):
            if ends is None or index not in ends:
                continue
            try:
                matches = list(compiled.finditer(text, overlapped=True, timeout=0.2))
            except TimeoutError:
                continue        # random nested repeats can backtrack for ages: not what is tested here
            for match in matches:
                assert match.end() in ends[index], (pattern, case_sensitive, text, match.span())


@needs_hyperscan
@pytest.mark.parametrize("pattern,case_sensitive,text", [
    ("viagra", False, "V\u0130AGRA"),          # dotted capital I: a case-insensitive i, casefold() is two characters
    ("kelvin", False, "\u212aELVIN"),          # Kelvin sign
    ("pass", False, "PA\u017f\u017f"),         # long s
    (r"[^ ]+x", True, "\u00a0x"),              # a no-break space is no ASCII space, nor in [^ ]'s shadow
    (r"[^4]x", True, "\uff14x"),               # a fullwidth digit 4 is not "4"
    (r"[^_]x", True, "\u00e9x"),               # é is a word character, shadowed as "_"
    (r"[^k]x", True, "\u212ax"),               # the Kelvin sign is not k
    (r"a\Sb", True, "a\x1cb"),                 # the regex module's \s leaves out \x1c-\x1f, Python's re not
    (r"a[^\s]b", True, "a\x1cb"),
    (r"a{,3}b", True, "aab"),                  # Python reads {,3} as 0 to 3; PCRE as literal text
])
def test_characters_that_read_differently_are_candidates(pattern, case_sensitive, text):
    compiled = regex.compile(pattern, regex.V0 if case_sensitive else regex.V0 | regex.IGNORECASE)
    assert compiled.search(text)
    checker = prefilter.Prefilter([(pattern, case_sensitive)])
    assert checker.candidates(text, 1) == {0}


@pytest.mark.parametrize("pattern", [r"\xe9t\xe9", r"[[:alpha:]]+x", r"\p{L}x", r"(a)\1", r"\X", r"a(?(1)b|c)"])
def test_syntax_hyperscan_would_read_otherwise_is_left_to_the_pattern(pattern):
    assert prefilter.hyperscan_source(pattern, True) is None
    checker = prefilter.Prefilter([(pattern, True), ("unrelated", True)])
    assert 0 in checker.candidates("no match of either", 2)


@needs_hyperscan
def test_a_rule_that_cannot_match_is_not_searched():
    checker = prefilter.Prefilter([("viagra", False), ("lottery", False)])
    assert checker.candidates("you won the LOTTERY", 2) == {1}


SHIPPED = load_rules(str(__import__("pathlib").Path(prefilter.__file__).parent / "patterns" / "spam"))


@needs_hyperscan
def test_the_shipped_body_and_raw_rules_are_all_prefiltered():
    engine = BuiltinSpamEngine(type("Config", (), {"regex_timeout": 1.0})(), SHIPPED)
    for kind in ("body", "raw"):
        checker, indexes = engine.prefilters[kind]
        assert len(checker.accepted) == len(indexes) == len([r for r in SHIPPED if r.type == kind])


class _Model:
    """What the built-in spam engine reads of a message."""

    def __init__(self, body: str):
        self.body_text = body
        self.parts = []
        self.headers = []

    def header_values(self, name):
        return []


def test_spam_scores_are_the_same_with_and_without_the_prefilter():
    rules = [rule for rule, _ in parse_rule_file(loads_yaml("""
rules:
  - {name: PILLS, type: body, regex: '\\b(?:viagra|cialis)\\b', score: 2}
  - {name: NOT_SPACE, type: body, regex: 'cash[^ ]prize', score: 1}
  - {name: CASE, type: body, regex: 'WINNER', case_sensitive: true, score: 1}
  - {name: RAW_STYLE, type: raw, regex: 'display\\s*:\\s*none', score: 1}
"""), "rules.yaml")]
    config = type("Config", (), {"regex_timeout": 1.0})()
    rng = random.Random(7)
    words = ["V\u0130AGRA", "viagra", "CIALIS", "cash\u00a0prize", "cash prize", "WINNER", "winner", "display:none",
             "DISPLAY : NONE", "\u212a", "text", " ", "\n"] + CHARACTERS
    with_prefilter = BuiltinSpamEngine(config, rules)
    without = BuiltinSpamEngine(config, rules)
    without.prefilters = {}
    for _ in range(200):
        body = "".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        model = _Model(body)
        scratch = {"message.raw": body.encode("utf-8")}
        assert [h.name for h in with_prefilter.score_message(model, None, dict(scratch)).hits] == \
            [h.name for h in without.score_message(model, None, dict(scratch)).hits], body


@needs_hyperscan
def test_scratches_are_reused_across_threads_and_never_shared_by_two_scans():
    """pymilter gives each SMTP connection a thread state of its own: a scratch per thread was a
    new allocation per connection. Sequential threads now reuse one scratch, and threads scanning
    at once each get their own (a shared scratch would make hyperscan refuse the scan)."""
    import threading

    patterns = [("invoice\\s+\\d+", False), ("wire\\s+transfer", False), ("k+i+s+", True)]
    filter_ = prefilter.Prefilter(patterns)
    text = "please pay invoice 42 by wire transfer, kkiss " * 50
    wanted = filter_.ends(text)
    assert wanted[0] and wanted[1] and wanted[2]
    results = []
    for _ in range(20):                      # one connection after another
        worker = threading.Thread(target=lambda: results.append(filter_.ends(text)))
        worker.start()
        worker.join()
    assert results == [wanted] * 20
    assert sum(len(idle) for idle in filter_._idle.values()) == 1
    barrier = threading.Barrier(8)
    errors, together = [], []

    def scan_together():
        try:
            barrier.wait()
            for _ in range(30):
                together.append(filter_.ends(text))
        except Exception as exc:             # noqa: BLE001 - reported below
            errors.append(exc)
    workers = [threading.Thread(target=scan_together) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == [] and together == [wanted] * 240
    assert 1 <= sum(len(idle) for idle in filter_._idle.values()) <= 8


@needs_hyperscan
def test_literal_set_finds_exactly_the_literals_a_search_for_each_finds():
    """LiteralSet (the script keywords of true-type detection) answers what a search for each
    literal in the lower-cased text answers: overlapping literals, literals that are prefixes of
    others, any ASCII case, Latin-1 letters beside them, each found once however often it occurs."""
    literals = ("set ", "wscript", "wscript.", "wscript.createobject", "%", "$env:", "[system.", "end ", "e")
    found = prefilter.LiteralSet(literals)
    assert found.database is not None
    pieces = ["Set ", "WScript", ".CreateObject", "%", "$ENV:", "[System.", "END ", "\xc9", "\xe9", "s\xe9t ",
              "wscri", "pt", " ", "\n", "x", "\x00", "\xff"]
    rng = random.Random(5)
    for _ in range(2000):
        data = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 10))).encode("latin-1")
        lowered = data.decode("latin-1").lower()
        assert found.present(data) == {literal for literal in literals if literal in lowered}, data


def test_literal_set_without_hyperscan_leaves_the_search_to_the_caller(monkeypatch):
    monkeypatch.setattr(prefilter, "hyperscan", None)
    assert prefilter.LiteralSet(("a", "b")).present(b"ab") is None
