"""DLP single pass: one prefilter scan for every expression identifier finds exactly what one pass each finds."""

from __future__ import annotations

import random

import pytest
import regex

from imss_milter.engines.dlp import compile_dlp, predefined_config
from imss_milter.engines.dlp import scanner as scanner_module
from imss_milter.engines.dlp.scanner import guided_finditer
from imss_milter.prefilter import ascii_shadow
from imss_milter.yamlconf import loads_yaml

# values, near misses and values that overlap each other (a card's digits, a date that looks like an SSN)
FRAGMENTS = [
    "4111 1111 1111 1111", "4111-1111-1111-1112", "41111111111111114111111111111111", "378282246310005",
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82WEST12345698765432", "DE89 3704 0044",
    "536-22-1234", "536 22 1234", "666-22-1234", "078-05-1120", "AB 12 34 56 C", "QQ123456C", "BG123456A",
    "john.doe@example.com", "a@b", "x.y+z@mail.example.org.", "+44 20 7946 0958", "(212) 555-0100",
    "212.555.0100", "192.0.2.10", "999.1.1.1", "10.0.0.1.5", "2001:db8::1", "fe80::1%eth0", "::",
    "DOB 1985-03-14", "born 14/03/1985", "date of birth: March 14, 1985", "1985-03-14", "31/02/1990 dob",
    "-----BEGIN RSA PRIVATE KEY-----", "AKIAIOSFODNN7EXAMPLE", "AKIA1234", "ghp_" + "a1B2" * 9,
    "MRN: 12345678", "medical record no. 1234567", "PRJ-123456", "PRJ-1234567", "INV-AB12345", "EMP0000000",
    "EMP1234567", "TCK-123", "JIRA-99999", "cvv", "security code", "12", "2024", "1-2-3", "--", "4111",
    "\n", "\t", ",", ".", "-", " ",
]
FILLER = ["pay", "the", "invoice", "today", "number", "ref", "see", "attached", "and", "Card", "ID", "x"]

ADMIN = """\
dlp:
  identifiers:
    project-code: {type: expression, pattern: "PRJ-\\\\d{6}"}
    invoice-ref: {type: expression, pattern: "INV-[A-Z]{2}\\\\d{5}", case_sensitive: true}
    employee-id: {type: expression, pattern: "EMP\\\\d{7}", validator: luhn}
    ticket: {type: expression, pattern: "\\\\b(?:JIRA|TCK)-\\\\d{3,6}\\\\b"}
    four-digits: {type: expression, pattern: "\\\\d{4}"}
    digit-run: {type: expression, pattern: "\\\\d+(?:[ -]\\\\d+)*"}
    after-dash: {type: expression, pattern: "(?<=-)\\\\d{2}"}
    cvv-words: {type: keywords, items: [cvv, cvc, "security code"]}
"""


def admin_config():
    return compile_dlp([loads_yaml(ADMIN, "admin.yaml")["dlp"]])


def random_text(rng: random.Random, pieces: int = 120) -> str:
    chosen = [rng.choice(FRAGMENTS) if rng.random() < 0.45 else rng.choice(FILLER) for _ in range(pieces)]
    return "".join(piece + rng.choice([" ", " ", "", "\n", ", ", "-"]) for piece in chosen)


def both_ways(scanner, text: str):
    """(single-pass scan, one-pass-per-identifier scan) of text."""
    single = scanner.scan(text)
    scanner.single_pass = False
    try:
        separate = scanner.scan(text)
    finally:
        del scanner.single_pass         # back to the class default
    return single, separate


needs_hyperscan = pytest.mark.skipif(scanner_module.hyperscan is None, reason="hyperscan is not installed")


@needs_hyperscan
def test_every_expression_identifier_is_prefiltered_in_one_scan():
    scanner = admin_config().scanner
    for expressions in (scanner._builtin, scanner._admin):
        assert len(expressions.prefilter.accepted) == len(expressions.compiled)
        ends = expressions.prefilter.ends("card 4111 1111 1111 1111 and PRJ-123456")
        assert ends is not None and set(ends) == set(range(len(expressions.compiled)))


@pytest.mark.parametrize("seed", range(40))
def test_single_pass_finds_what_one_pass_per_identifier_finds(seed):
    scanner = admin_config().scanner
    text = random_text(random.Random(seed))
    single, separate = both_ways(scanner, text)
    assert single.matches == separate.matches
    assert not single.timed_out


def test_identifiers_matching_the_same_characters_are_all_found():
    scanner = admin_config().scanner
    text = "card 4111 1111 1111 1111, ssn 536-22-1234"
    matches = scanner.scan(text).matches
    assert [m.value for m in matches["credit-card"]] == ["4111111111111111"]
    assert [m.value for m in matches["four-digits"]] == ["4111", "1111", "1111", "1111", "1234"]
    assert [m.value for m in matches["digit-run"]] == ["4111 1111 1111 1111", "536-22-1234"]
    assert [m.value for m in matches["us-ssn"]] == ["536221234"]
    assert [m.value for m in matches["after-dash"]] == ["22", "12"]


def test_adding_identifiers_does_not_change_what_the_others_find():
    alone = predefined_config().scanner
    crowded = admin_config().scanner
    for seed in range(15):
        text = random_text(random.Random(1000 + seed))
        before, after = alone.scan(text).matches, crowded.scan(text).matches
        for name in before:
            assert after.get(name) == before[name], name
        for name in ("credit-card", "us-ssn", "iban"):
            assert after.get(name) == before.get(name), name


def test_text_that_is_not_ascii_gets_the_same_results():
    scanner = admin_config().scanner
    text = "Café: Karte 4111 1111 1111 1111, ssn 536-22-1234, ticket TCK-123 \u2014 PRJ-123456 ４１１１"
    single, separate = both_ways(scanner, text)
    assert single.matches == separate.matches
    assert [m.value for m in single.matches["ticket"]] == ["TCK-123"]
    # Python's \d matches every script's digits; the prefilter must not lose them
    assert "４１１１" in [m.value for m in single.matches["four-digits"]]


def test_control_white_space_gets_the_same_results():
    config = compile_dlp([loads_yaml('dlp:\n  identifiers:\n    spaced: {type: expression, pattern: "ab\\\\sc"}\n',
                                     "x.yaml")["dlp"]])
    for space in ("\x0b", "\x1c", "\x1f", "\x0c", "\r", " "):
        single, separate = both_ways(config.scanner, f"x ab{space}c y")
        assert single.matches == separate.matches, repr(space)


def test_admin_expression_time_limit_still_holds():
    rules = 'dlp:\n  identifiers:\n    slow: {type: expression, pattern: "(?:a|aa)+(?=c)b"}\n'
    config = compile_dlp([loads_yaml(rules, "slow.yaml")["dlp"]], regex_timeout=0.05)
    scan = config.scanner.scan("a" * 5000 + "b card 4111 1111 1111 1111")
    assert scan.timed_out
    assert [m.value for m in scan.matches["credit-card"]] == ["4111111111111111"]   # built-ins are not cut short


@pytest.mark.parametrize("pattern,text", [
    (r"\d{3}", "12345 678 9 0000"),
    (r"(?<!\d)\d{2,4}(?!\d)", "1 22 333 4444 55555 66-77"),
    (r"a[^b]*c", "axxc abc ac a\nc"),
    (r"x?y", "xy y xxy"),
])
def test_guided_search_equals_finditer_with_extra_end_offsets(pattern, text):
    compiled = regex.compile(pattern)
    expected = [m.span() for m in compiled.finditer(text)]
    true_ends = sorted({end for _, end in expected})
    rng = random.Random(pattern)
    noisy = sorted(set(true_ends) | {rng.randrange(len(text) + 1) for _ in range(5)})
    for width in (None, 40):
        assert [m.span() for m in guided_finditer(compiled, text, noisy, width, None)] == expected
        assert [m.span() for m in guided_finditer(compiled, text, true_ends, width, None)] == expected


# characters Unicode-aware patterns treat specially: other scripts' digits, no-break and other spaces,
# letters whose case folding is ASCII (Kelvin sign), accented letters, combining marks, dashes, emoji
UNICODE_FRAGMENTS = [
    "４１１１ １１１１ １１１１ １１１１", "٤١١١ ١١١١ ١١١١ ١١١١", "536\u201122\u20111234", "PRJ-１２３４５６",
    "4111\u00a01111\u00a01111\u00a01111", "4111\u20071111\u20071111\u20071111", "\u212aAB 12 34 56 C",
    "Café", "naïve", "e\u0301", "José.García@exämple.com", "\u2014", "\u2028", "\U0001F4B3", "ＴＣＫ-123",
    "TCK-１２３", "Straße", "İstanbul", "\ufeff", "\u200b4111 1111 1111 1111",
]


@pytest.mark.parametrize("seed", range(30))
def test_text_with_unicode_gets_the_same_results_both_ways(seed):
    scanner = admin_config().scanner
    rng = random.Random(5000 + seed)
    text = "".join(rng.choice(UNICODE_FRAGMENTS + FRAGMENTS + FILLER) + rng.choice([" ", "", "\n", "\u00a0", "-"])
                   for _ in range(120))
    single, separate = both_ways(scanner, text)
    assert single.matches == separate.matches


@needs_hyperscan
def test_text_that_is_not_ascii_is_prefiltered_through_its_ascii_shadow():
    scanner = admin_config().scanner
    text = "Café: Karte ４１１１ １１１１ １１１１ １１１１ \u2014 PRJ-123456"
    assert ascii_shadow(text) == "Caf_: Karte 4111 1111 1111 1111 \x00 PRJ-123456"
    assert len(ascii_shadow(text)) == len(text)
    assert scanner._builtin.prefilter.ends(text) is not None, "one scan, not one pass per identifier"


def test_a_text_too_dense_in_candidates_is_scanned_without_the_prefilter():
    """Past MAX_HITS candidate ends the prefilter stops its scan and gives up: hyperscan reports the
    stop as ScanTerminated, which escaped ends() and made DLP an engine error (a tempfail on every
    retry) for such a text. Now the text is scanned one pass per identifier, with the same findings."""
    scanner = admin_config().scanner
    expressions = scanner._admin.prefilter
    assert expressions is not None and expressions.active
    text = "1" * 60_000 + " PRJ-123456 EMP1234567 TCK-123 security code"       # every digit ends a candidate
    assert expressions.ends(text) is None
    assert expressions.ends("é" + text) is None                                # through the ASCII shadow
    assert expressions.ends("PRJ-123456") is not None
    single, separate = both_ways(scanner, text)
    assert single == separate
    assert single.matches["project-code"] and single.matches["ticket"]
