"""Fast paths of the engines and the policy evaluation give the answers of the general code they replace."""

from __future__ import annotations

import random
import re

import pytest

from imss_milter.policy.conditions import basename, engines_of, extensions
from tests.policy.builders import inbound, rules

ENGINE_RULES = """\
    address_groups:
      partners: ["*@partner.test"]
    policies:
      - {name: a, route: {from: any, to: internal}, when: {virus: true}, actions: [{add_header: {name: X-A, value: "1"}}]}
      - {name: b, route: {from: any, to: any}, when: {any: [{spam: {level: low}}, {not: {dlp: [pii]}}]},
         actions: [{add_header: {name: X-B, value: "1"}}]}
      - {name: c, route: {from: partners, to: internal}, when: {url.reputation: true}, actions: [{add_header: {name: X-C, value: "1"}}]}
      - {name: d, route: {from: any, to: internal}, enabled: false, when: {sender.reputation: true},
         actions: [{add_header: {name: X-D, value: "1"}}]}
      - {name: e, route: {from: any, to: internal}, actions: [{add_header: {name: X-E, value: "1"}}]}
      - {name: f, route: {from: any, to: "!internal"}, when: {all: [{subject: [zz]}, {virus: [spyware]}]},
         actions: [{add_header: {name: X-F, value: "1"}}]}
    """


def test_engines_for_is_the_union_of_engines_of_the_routed_policies(tmp_path):
    ruleset = rules(tmp_path, ENGINE_RULES)
    envelopes = [("x@partner.test", ["u@example.com"]), ("x@outside.test", ["u@example.com"]),
                 ("x@outside.test", ["u@elsewhere.test"]), ("", ["u@sub.example.com", "v@elsewhere.test"]),
                 ("me@example.com", ["you@outside.test"]), ("", [])]
    for sender, recipients in envelopes:
        env = inbound(sender=sender, recipients=recipients)
        routed = ruleset.routed(env)
        expected = set()
        for policy in routed:
            expected |= engines_of(policy.condition)
        assert ruleset.engines_for(env, routed) == expected
        assert ruleset.engines_for(env) == expected
        # the caller may change the answer: it must be a set of its own
        ruleset.engines_for(env, routed).add("changed")
        assert "changed" not in ruleset.engines_for(env, routed)


def _basename_by_regex(name: str) -> str:
    return re.split(r"[\\/]", name)[-1].rstrip(". \t")


def _extensions_by_regex(name: str) -> list[str]:
    pieces = _basename_by_regex(name).lower().split(".")[1:]
    if not pieces:
        return []
    found = [pieces[-1].strip()]
    found += [p.strip() for p in reversed(pieces[:-1]) if re.match(r"^[a-z0-9]{1,8}$", p.strip())]
    return [e for e in found if e]


NAMES = ["", ".", "..", "a", "a.exe", "a.pdf.exe", "C:\\temp\\x.scr", "dir/sub\\file.tar.gz", "/", "\\",
         "a/", "a\\", "trailing.exe. . ", "x/.hidden", "weird\\/mix/\\.doc", "évil.ｅｘｅ", "a\tb.exe\t",
         "many.dots.in.a.name.js", "\u202egnp.exe", "a/b/c/", "no ext here", "..\\..\\win.ini"]


@pytest.mark.parametrize("seed", range(5))
def test_basename_and_extensions_match_the_regex_split(seed):
    rng = random.Random(seed)
    alphabet = "ab./\\ \t.xe\u00e9\u202eE"
    names = NAMES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(2000)]
    for name in names:
        assert basename(name) == _basename_by_regex(name), name
        assert extensions(name) == _extensions_by_regex(name), name


# --- the built-in spam engine: prefilters over the joined URLs and header values -----------------

from imss_milter import prefilter  # noqa: E402
from imss_milter.engines.spam.builtin import BuiltinSpamEngine  # noqa: E402
from imss_milter.engines.spam.rules import load_rules, parse_rule_file  # noqa: E402
from imss_milter.yamlconf import loads_yaml  # noqa: E402

needs_hyperscan = pytest.mark.skipif(prefilter.hyperscan is None, reason="hyperscan is not installed")

SPAM_RULES = r"""
rules:
  - {name: SUBJ_CAPS, type: header, header: Subject, regex: '^[^a-z]*[A-Z]{4,}[^a-z]*$', case_sensitive: true, score: 1}
  - {name: SUBJ_MONEY, type: header, header: subject, regex: '\$\s?\d+|\bfree\s+money\b', score: 2}
  - {name: SUBJ_END, type: header, header: SUBJECT, regex: '!!$', score: 0.5}
  - {name: SUBJ_EMPTY, type: header, header: Subject, regex: '^$', score: 0.25}
  - {name: SUBJ_EITHER, type: header, header: Subject, regex: '(?:$|zz)', score: 0.125}
  - {name: XM_ONE, type: header, header: X-Mailer, regex: '^bulk', score: 1}
  - {name: XM_TWO, type: header, header: x-mailer, regex: 'mail\b', score: 1}
  - {name: LIST, type: header, header: List-Id, regex: '.', score: -0.5}
  - {name: URL_IP, type: url, regex: '^[a-z]+://(?:\d{1,3}\.){3}\d{1,3}(?:[:/]|$)', score: 2}
  - {name: URL_SHORT, type: url, regex: '^[a-z]+://(?:www\.)?(?:bit\.ly|t\.co)/', score: 1}
  - {name: URL_END, type: url, regex: '\.exe$', score: 3}
  - {name: URL_NOT_K, type: url, regex: '//[^k]\S*\u212a', score: 1}
  - {name: URL_KELVIN, type: url, regex: 'kelvin', score: 1}
  - {name: BODY_PILLS, type: body, regex: '\b(?:viagra|cialis)\b', score: 2}
  - {name: RAW_STYLE, type: raw, regex: 'display\s*:\s*none', score: 1}
"""


class _Part:
    def __init__(self, payload: bytes, charset="utf-8", is_text_body=True):
        self.payload = payload
        self.charset = charset
        self.is_text_body = is_text_body


class _Model:
    def __init__(self, body: str, headers: list[tuple[str, str]], parts):
        self.body_text = body
        self.headers = headers
        self.parts = parts
        self.subject = next((v for n, v in headers if n.lower() == "subject"), "")

    def header_values(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]


SUBJECTS = ["", "HELLO WORLD", "FREE MONEY", "free   money now!!", "$ 100", "$100!!", "Hi!!", "\u212aELVIN CAPS",
            "ÉCOLE GRATUITE", "zz", "multi\nline!!", "CAPS\nlower", " ", "BUY NOW!!\n", "İSTANBUL OFFER"]
URL_PIECES = ["http://", "https://", "ftp://", "http://192.168.1.1/", "https://10.0.0.1:8080/x", "http://1.2.3.4",
              "http://bit.ly/abc", "https://www.t.co/x", "http://evil.test/a.exe", "http://good.test/a.exe.txt",
              "http://\u212aelvin.test/", "http://kelvin.test/", "http://xx\u212a.test/", "www.example.com",
              " ", "\n", "<a href=\"", "\">", ".", "http://ok.test/?q=1.2.3.4", "HTTP://BIT.LY/Z"]


def _random_model(rng: random.Random) -> _Model:
    headers = [("From", "a@b.test")]
    for _ in range(rng.randint(0, 3)):
        headers.append((rng.choice(["Subject", "subject", "SUBJECT"]), rng.choice(SUBJECTS)))
    for _ in range(rng.randint(0, 2)):
        headers.append(("X-Mailer", rng.choice(["bulk mailer", "Thunderbird", "bulkmail", "mail", "", "x\nbulk"])))
    if rng.random() < 0.3:
        headers.append(("List-Id", rng.choice(["<l.test>", ""])))
    body = "".join(rng.choice(URL_PIECES + ["viagra ", "text "]) for _ in range(rng.randint(0, 10)))
    parts = [_Part("".join(rng.choice(URL_PIECES) for _ in range(rng.randint(0, 8))).encode(
        rng.choice(["utf-8", "utf-16"])), charset=rng.choice(["utf-8", "utf-16", None, "bogus"]))
        for _ in range(rng.randint(0, 2))]
    for part in parts:
        if part.charset == "utf-16" and not part.payload.startswith((b"\xff\xfe", b"\xfe\xff")):
            part.charset = "utf-8"
    return _Model(body, headers, parts)


@needs_hyperscan
@pytest.mark.parametrize("seed", range(4))
def test_spam_scores_are_the_same_with_and_without_the_joined_prefilters(seed):
    rules = [rule for rule, _ in parse_rule_file(loads_yaml(SPAM_RULES), "rules.yaml")]
    config = type("Config", (), {"regex_timeout": 1.0})()
    fast = BuiltinSpamEngine(config, rules)
    assert {"url", ("header", "subject"), ("header", "x-mailer")} <= set(fast.prefilters)
    general = BuiltinSpamEngine(config, rules)
    general.prefilters = {}          # every rule searched in every text
    rng = random.Random(seed)
    seen = set()
    for _ in range(300):
        model = _random_model(rng)
        scratch = {"message.raw": (model.body_text + "style=display:none").encode("utf-8", "replace")}
        got = fast.score_message(model, None, dict(scratch))
        want = general.score_message(model, None, dict(scratch))
        assert [(h.name, h.score) for h in got.hits] == [(h.name, h.score) for h in want.hits], model.headers
        assert got.score == want.score and got.notes == want.notes
        seen.update(h.name for h in want.hits)
    assert len(seen) >= len(rules) - 2, seen        # the inputs make (almost) every rule hit somewhere


@needs_hyperscan
def test_the_shipped_url_and_subject_rules_are_prefiltered_and_score_alike():
    shipped = load_rules(str(__import__("pathlib").Path(prefilter.__file__).parent / "patterns" / "spam"))
    config = type("Config", (), {"regex_timeout": 1.0})()
    fast = BuiltinSpamEngine(config, shipped)
    for group in ("url", ("header", "subject")):
        checker, indexes = fast.prefilters[group]
        assert len(checker.accepted) == len(indexes) >= 2
    general = BuiltinSpamEngine(config, shipped)
    general.prefilters = {}
    rng = random.Random(11)
    for _ in range(300):
        model = _random_model(rng)
        scratch = {"message.raw": model.body_text.encode("utf-8", "replace")}
        assert [h.name for h in fast.score_message(model, None, dict(scratch)).hits] == \
            [h.name for h in general.score_message(model, None, dict(scratch)).hits]


@needs_hyperscan
@pytest.mark.parametrize("seed", range(10))
def test_unanchored_prefilter_finds_every_pattern_matching_one_of_the_joined_texts(seed):
    from tests.unit.test_prefilter import random_compiled_patterns, random_text
    rng = random.Random(seed)
    patterns = random_compiled_patterns(rng, 20)
    checker = prefilter.Prefilter([(p, c) for p, c, _ in patterns], anchored=False)
    for _ in range(150):
        texts = [random_text(rng) for _ in range(rng.randint(1, 4))]
        candidates = checker.candidates("\n".join(texts), len(patterns))
        for index, (pattern, _, compiled) in enumerate(patterns):
            try:
                found = any(compiled.search(text, timeout=0.05) for text in texts)
            except TimeoutError:
                continue            # a random pattern can backtrack for ever: no answer to compare
            if found:
                assert index in candidates, (pattern, texts)


FUZZY_RULES = r"""
rules:
  - {name: SUBJ_FUZZY, type: header, header: Subject, regex: '(?:viagra){e<=1}', score: 3}
  - {name: SUBJ_FUZZY_CHAR, type: header, header: Subject, regex: 'cialis{i<=2}', score: 2}
  - {name: SUBJ_PLAIN, type: header, header: Subject, regex: 'offer', score: 1}
  - {name: URL_FUZZY, type: url, regex: '(?:paypal){1<=s<=1}\.', score: 4}
  - {name: URL_PLAIN, type: url, regex: 'login', score: 1}
  - {name: BODY_FUZZY, type: body, regex: '(?:lottery){e<=1}', score: 2}
  - {name: BODY_PLAIN, type: body, regex: 'winner', score: 1}
  - {name: BODY_BRACES, type: body, regex: 'a{}|x{,}y|[{]z|\{w\}', score: 1}
"""


@needs_hyperscan
def test_a_regex_brace_python_reads_literally_is_not_prefiltered():
    # The regex module reads a `{` that opens no plain repeat as a fuzzy-matching constraint:
    # (?:viagra){e<=1} matches "viagr4". Python's parser (which writes the Hyperscan prefilter)
    # reads it as the literal text "{e<=1}", so the prefilter said such a rule could not match.
    rules = [rule for rule, _ in parse_rule_file(loads_yaml(FUZZY_RULES), "rules.yaml")]
    config = type("Config", (), {"regex_timeout": 1.0})()
    fast = BuiltinSpamEngine(config, rules)
    assert {"body", "url", ("header", "subject")} <= set(fast.prefilters)
    general = BuiltinSpamEngine(config, rules)
    general.prefilters = {}
    cases = [("V1AGRA offer", "http://paypa1.test/login lottary", ""),
             ("viagr4", "winner: lotery http://paypall.test/", ""),
             ("cialixs now", "a{}, xy, {z, {w}", "http://x.test/")]
    seen = set()
    for subject, body, extra in cases:
        model = _Model(body + " " + extra, [("Subject", subject)], [])
        scratch = {"message.raw": model.body_text.encode("utf-8")}
        got = fast.score_message(model, None, dict(scratch))
        want = general.score_message(model, None, dict(scratch))
        assert [(h.name, h.score) for h in got.hits] == [(h.name, h.score) for h in want.hits], subject
        seen.update(h.name for h in want.hits)
    assert {"SUBJ_FUZZY", "SUBJ_FUZZY_CHAR", "URL_FUZZY", "BODY_FUZZY", "BODY_BRACES"} <= seen
    for pattern in ("(?:viagra){e<=1}", "a{}", "x{,}", "[{]", "(?x) a{ 2 }"):
        assert prefilter.hyperscan_source(pattern, True) is None, pattern
    for pattern in (r"a{2}", r"a{2,}", r"\d{1,3}", r"a{,3}", r"\{e<=1\}", r"\x7be"):
        assert prefilter.hyperscan_source(pattern, True) is not None, pattern


@needs_hyperscan
def test_candidates_agree_with_ends():
    from tests.unit.test_prefilter import random_pattern, random_text
    import regex
    rng = random.Random(3)
    patterns = []
    while len(patterns) < 30:
        pattern = random_pattern(rng)
        try:
            regex.compile(pattern)
        except regex.error:
            continue
        patterns.append((pattern, rng.random() < 0.5))
    checker = prefilter.Prefilter(patterns)
    for _ in range(300):
        text = random_text(rng) * rng.choice([1, 1, 5])
        ends = checker.ends(text)
        expected = set(range(len(patterns))) if ends is None else \
            {index for index in range(len(patterns)) if ends.get(index, True)}
        assert checker.candidates(text, len(patterns)) == expected


# --- the built-in antivirus: no YARA call for a part longer than every rule's filesize bound --------

from imss_milter.engines.antivirus.signatures import (  # noqa: E402
    SignatureSet, load_signatures, yara_rule_bounds)

SEED_DIR = str(__import__("pathlib").Path(prefilter.__file__).parent.parent / "patterns" / "antivirus")

BOUNDED = r'''
import "math"
/* a comment with } and or and { */
private rule Small : tag1 tag2 { condition: filesize <= 2KB and uint16(0) == 0x5a4d }
global rule Tiny
{
    meta:
        condition = "or } {"      // a meta key named condition
        n = 3
    strings:
        $a = "or } \" {" nocase
        $b = { 4D 5A [2-4] ( 90 | 91 ) ?? }
        $c = /ab[}{]c\/d/is
    condition:
        ($a or $b) and filesize < 0x100 and for any i in (1..#c) : ( @c[i] < 10 or true ) and not $c
}
rule Plain { strings: $x = "imss" condition: $x at 0 and filesize <= 100 }
'''


@pytest.mark.parametrize("source, expected", [
    (BOUNDED, [("Small", 2048), ("Tiny", 255), ("Plain", 100)]),
    ('rule A { condition: filesize <= 10 or true }', [("A", None)]),
    ('rule A { condition: true or filesize <= 10 }', [("A", None)]),
    ('rule A { condition: not filesize <= 10 and true }', [("A", None)]),
    ('rule A { condition: (filesize <= 10) and true }', [("A", None)]),
    ('rule A { condition: filesize <= 10 + 5 and true }', [("A", None)]),
    ('rule A { condition: filesize <= 10 == true }', [("A", None)]),
    ('rule A { condition: (true or false) and filesize < 5MB }', [("A", 5 * 1024 * 1024 - 1)]),
    ('rule A { condition: filesize >= 10 }', [("A", None)]),
    ('rule A { condition: 10 >= filesize }', [("A", None)]),
    ('rule A { strings: $a = { 4D // } \n 5A } condition: $a and filesize < 9 }', None),
    ('include "other.yar"\nrule A { condition: filesize < 9 }', None),
    ('rule A { condition: filesize < 9 }\nrule B { condition: true }', [("A", 8), ("B", None)]),
])
def test_yara_rule_bounds(source, expected):
    assert yara_rule_bounds(source) == expected


def test_the_seed_rules_are_bounded_and_a_set_with_an_unbounded_rule_is_not(tmp_path):
    assert load_signatures(SEED_DIR).yara_max_size == 128
    (tmp_path / "a.yar").write_text('rule A { condition: filesize <= 10 and true }')
    (tmp_path / "b.yar").write_text('rule B { strings: $x = "b" condition: $x }')
    assert load_signatures(str(tmp_path)).yara_max_size is None
    (tmp_path / "b.yar").write_text('rule B { strings: $x = "b" condition: $x and filesize <= 30 }')
    assert load_signatures(str(tmp_path)).yara_max_size == 30
    # what the files say must be what compiled: a rule the reader missed means no bound
    (tmp_path / "b.yar").write_text('rule B { condition: filesize <= 30 } rule C { condition: true }')
    assert load_signatures(str(tmp_path)).yara_max_size is None
    # what the reader does not follow (a comment in a hex string) gives no bound either
    (tmp_path / "b.yar").write_text('rule B { strings: $a = { 4D // c\n 5A } condition: $a and filesize <= 30 }')
    assert load_signatures(str(tmp_path)).yara_rules is not None
    assert load_signatures(str(tmp_path)).yara_max_size is None
    # a private rule needs no bound of its own: it is never a match
    (tmp_path / "b.yar").write_text('private rule P { condition: true } rule B { condition: P and filesize <= 30 }')
    assert load_signatures(str(tmp_path)).yara_max_size == 30


def test_a_file_swapped_between_compiling_and_reading_gives_no_bound(tmp_path):
    """The bound must come from the text that compiled: when a file's text differs from what was
    read before compiling (an update swapped it meanwhile), no bound is trusted."""
    from imss_milter.engines.antivirus.signatures import compile_yara, read_sources, yara_size_bound

    path = tmp_path / "a.yar"
    path.write_text('rule A { strings: $a = "evil" condition: $a and filesize <= 30 }')
    paths = [str(path)]
    before = read_sources(paths)
    rules = compile_yara(paths)
    assert yara_size_bound(paths, rules, before) == 30
    path.write_text('rule A { strings: $a = "evil" condition: $a and filesize <= 3000 }')   # same rule names
    assert yara_size_bound(paths, rules, before) is None
    assert read_sources([str(tmp_path / "missing.yar")]) is None


YARA_FUZZ = r'''
rule Head { strings: $h = "MZ" condition: $h at 0 and filesize <= 64 }
rule Any_A { strings: $a = "aaaa" condition: filesize < 40 and $a }
private rule Helper { condition: uint8(0) == 0x41 }
rule Uses_Helper { condition: Helper and filesize <= 100 and filesize >= 2 }
rule Wide { strings: $w = "zz" wide condition: all of them and filesize <= 0x50 }
'''


@pytest.mark.parametrize("seed", range(3))
def test_skipping_yara_past_the_bound_gives_the_same_detections(tmp_path, seed):
    (tmp_path / "fuzz.yar").write_text(YARA_FUZZ)
    (tmp_path / "x.hdb").write_text("0cc175b9c0f1b6a831c399e269772661:1:Test.Hash-1\n"
                                     "e1faffb3e614e6c2fba74296962386b7:3:Test.Hash-2\n")
    fast = load_signatures(str(tmp_path))
    assert fast.yara_max_size == 100
    general = SignatureSet(fast.directory, fast.hashes, fast.yara_rules, fast.files, None)
    rng = random.Random(seed)
    pieces = [b"MZ", b"aaaa", b"A", b"z\x00z\x00", b"a", b"AAA", b"\x00", b"x" * 30, b"\xff", b"zz"]
    payloads = [b"", b"a", b"AAA", b"MZ" + b"\0" * 62, b"MZ" + b"\0" * 63, b"A" * 100, b"A" * 101]
    payloads += [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(1500)]
    seen = set()
    for payload in payloads:
        got = [(d.name, d.category, d.kind) for d in fast.scan(payload)]
        assert got == [(d.name, d.category, d.kind) for d in general.scan(payload)], payload
        seen.update(name for name, _, _ in got)
    assert seen >= {"Head", "Any_A", "Uses_Helper", "Wide", "Test.Hash-1", "Test.Hash-2"}
    batch = payloads[:300]
    assert [[d.name for d in found] for found in fast.scan_many(batch)] == \
        [[d.name for d in general.scan(payload)] for payload in batch]


def test_the_antivirus_engine_answers_alike_with_and_without_the_bound():
    from imss_milter.engines.antivirus.builtin import BuiltinEngine
    from imss_milter.mime import parse_message
    from imss_milter.mime.model import Limits
    eicar = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    fast_set = load_signatures(SEED_DIR)
    options = type("Options", (), {"timeout": 10})()
    fast = BuiltinEngine(options, fast_set)
    general = BuiltinEngine(options, SignatureSet(fast_set.directory, fast_set.hashes, fast_set.yara_rules,
                                                  fast_set.files, None))
    import base64
    import io
    import zipfile
    for body in (eicar, eicar + b"  \n", eicar + b" " * 200, b"x" + eicar, b"hello"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a.com", body)
            archive.writestr("b/c.txt", body * 2)
        raw = (b"From: a@b.test\r\nTo: c@d.test\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
               + body + b"\r\n--XX\r\nContent-Type: application/zip; name=z.zip\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(buffer.getvalue())
               + b"--XX\r\nContent-Type: application/octet-stream\r\n\r\n" + body + b"\r\n--XX--\r\n")
        model = parse_message(raw, Limits())
        assert fast.scan(model) == general.scan(model)
