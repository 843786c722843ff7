"""The spam engine's built-in backend: rule files, scoring, levels, sender lists, exemptions, header."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from imss_milter.engines import EngineOptions, component_dir
from imss_milter.engines import spam
from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.mime.model import Limits
from imss_milter.policy.types import Envelope, Modification
from imss_milter.yamlconf import loads_yaml

# split so this file is not itself a GTUBE message to any scanner that reads it
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RULES = """\
rules:
  - name: CHEAP_MEDS
    type: body
    regex: 'cheap\\s+meds'
    score: 3
    description: cheap meds offer
  - name: SUBJ_WIN
    type: header
    header: Subject
    regex: '\\bwinner\\b'
    score: 2.5
  - name: KNOWN_LIST
    type: header
    header: List-Id
    regex: 'newsletter\\.example'
    score: -4
  - name: RAW_HIDDEN
    type: raw
    regex: 'display:\\s*none'
    score: 1
  - name: URL_IP
    type: url
    regex: '^https?://\\d+\\.\\d+\\.\\d+\\.\\d+/'
    score: 2
"""


def make_settings(tmp_path, rules=RULES, gtube=True):
    directory = tmp_path / "patterns" / "current" / "spam"
    directory.mkdir(parents=True)
    (directory / "10-test.yaml").write_text(rules)
    if gtube:   # the shipped GTUBE rule, as an installed pattern set would carry it
        (directory / "00-test.yaml").write_text(open(component_dir(None, "spam") + "/00-test.yaml").read())
    return SimpleNamespace(patterns_dir=str(tmp_path / "patterns"), limits=Limits())


def make_engine(tmp_path, section="backend: builtin", **kwargs):
    settings = make_settings(tmp_path, **kwargs)
    data = loads_yaml(textwrap.dedent(section), "imss-milter.yaml")
    options = EngineOptions(name="spam", backend=data.get("backend", "builtin"), section=data)
    return spam.build(options, settings)


def message(subject="hello", body="Just a note.\n", headers=(), sender="alice@example.org", html=None) -> bytes:
    lines = [f"From: {sender}", "To: user@example.com", f"Subject: {subject}", *headers]
    if html is not None:
        lines += ["MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8"]
        body = html
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def run(engine, raw, argument=("level", "medium"), envelope=None, scratch=None):
    model = parse_message(raw)
    envelope = envelope or Envelope(sender="alice@example.org", recipients=["user@example.com"])
    scratch = {} if scratch is None else scratch
    engine.prepare(model, envelope, scratch)
    return engine.check("spam", argument, model, envelope, scratch), scratch


def hit_names(scratch):
    return [hit.name for hit in scratch["spam.result"].hits]


# ------------------------------------------------------------------ rule files

def test_shipped_seed_rules_load_and_validate():
    directory = component_dir(None, "spam")
    spam.validate_component("spam", directory)
    names = [rule.name for rule in spam.load_rules(directory)]
    assert "GTUBE" in names and len(names) == len(set(names))


def test_bad_regex_names_file_and_line(tmp_path):
    (tmp_path / "10-bad.yaml").write_text(textwrap.dedent("""\
        rules:
          - name: GOOD
            type: body
            regex: 'fine'
            score: 1
          - name: BROKEN
            type: body
            regex: 'unclosed(group'
            score: 1
        """))
    with pytest.raises(ConfigError) as caught:
        spam.validate_component("spam", str(tmp_path))
    assert caught.value.file.endswith("10-bad.yaml")
    assert caught.value.line == 8
    assert "BROKEN" in str(caught.value) and "regular expression" in str(caught.value)


@pytest.mark.parametrize("rule, line, words", [
    ("  - {name: A, type: headers, regex: x, score: 1}", 2, "type"),
    ("  - {name: A, type: header, regex: x, score: 1}", 2, "header"),
    ("  - {name: A, type: body, regex: x, score: lots}", 2, "score"),
    ("  - {name: A, type: body, regex: x, score: 1, colour: red}", 2, "colour"),
    ("  - {name: 'bad name', type: body, regex: x, score: 1}", 2, "name"),
    ("  - {name: A, type: body, score: 1}", 2, "regex"),
])
def test_bad_rules_are_refused_with_location(tmp_path, rule, line, words):
    (tmp_path / "r.yaml").write_text("rules:\n" + rule + "\n")
    with pytest.raises(ConfigError) as caught:
        spam.validate_component("spam", str(tmp_path))
    assert caught.value.line == line and words in str(caught.value)


@pytest.mark.parametrize("text, line", [
    ("# local rules\nrules: {}\n", 2),
    ("rules:\n  name: A\n  type: body\n  regex: x\n  score: 1\n", 1),
    ("rules: A\n", 1),
])
def test_rules_that_are_not_a_list_are_refused(tmp_path, text, line):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        spam.validate_component("spam", str(tmp_path))
    assert f"r.yaml:{line}: " in str(caught.value) and "expected a list of rules" in str(caught.value)


def test_rules_with_nothing_under_it_is_a_file_without_rules(tmp_path):
    (tmp_path / "a.yaml").write_text("rules:\n")
    (tmp_path / "b.yaml").write_text("rules: []\n")
    (tmp_path / "c.yaml").write_text("rules:\n  - {name: A, type: body, regex: x, score: 1}\n")
    spam.validate_component("spam", str(tmp_path))
    assert [rule.name for rule in spam.rules.load_rules(str(tmp_path))] == ["A"]


def test_a_rule_name_defined_twice_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("rules:\n  - {name: A, type: body, regex: x, score: 1}\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - {name: B, type: body, regex: y, score: 1}\n"
                                     "  - {name: A, type: body, regex: z, score: 2}\n")
    with pytest.raises(ConfigError) as caught:
        spam.validate_component("spam", str(tmp_path))
    assert caught.value.file.endswith("b.yaml") and caught.value.line == 3 and "twice" in str(caught.value)


def test_an_update_without_rule_files_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        spam.validate_component("spam", str(tmp_path))


# ------------------------------------------------------------------ scoring

def test_scores_of_matching_rules_add_up(tmp_path):
    engine = make_engine(tmp_path)
    raw = message(subject="You are a winner", body="Get cheap meds today.\n")
    findings, scratch = run(engine, raw, ("score", ">=", 5.5))
    assert scratch["spam.result"].score == pytest.approx(5.5)
    assert sorted(hit_names(scratch)) == ["CHEAP_MEDS", "SUBJ_WIN"]
    assert findings and findings[0]["score"] == pytest.approx(5.5)
    assert {r["name"]: r["score"] for r in findings[0]["rules"]} == {"CHEAP_MEDS": 3.0, "SUBJ_WIN": 2.5}
    assert "CHEAP_MEDS(3)" in findings[0]["detail"]
    # the same message is below a stricter comparison
    assert engine.check("spam", ("score", ">", 5.5), parse_message(raw), Envelope(), scratch) == []


def test_a_rule_counts_once_however_often_it_matches(tmp_path):
    engine = make_engine(tmp_path)
    _, scratch = run(engine, message(body="cheap meds, cheap meds, cheap meds\n"))
    assert scratch["spam.result"].score == 3


def test_negative_scores_lower_the_total(tmp_path):
    engine = make_engine(tmp_path)
    raw = message(subject="winner", body="cheap meds\n", headers=["List-Id: <news.newsletter.example>"])
    findings, scratch = run(engine, raw, ("score", ">=", 5))
    assert findings == []
    assert scratch["spam.result"].score == pytest.approx(1.5)
    assert "KNOWN_LIST" in hit_names(scratch)


def test_clean_message_scores_zero_and_holds_no_level(tmp_path):
    engine = make_engine(tmp_path)
    for level in ("low", "medium", "high"):
        findings, scratch = run(engine, message(), ("level", level))
        assert findings == []
    assert scratch["spam.result"].score == 0


def test_gtube_scores_1000(tmp_path):
    engine = make_engine(tmp_path)
    findings, scratch = run(engine, message(body=f"test\n{GTUBE}\n"), ("level", "low"))
    assert scratch["spam.result"].score == 1000
    assert hit_names(scratch) == ["GTUBE"] and findings


def test_raw_and_url_rules_see_html_the_text_does_not_show(tmp_path):
    engine = make_engine(tmp_path)
    html = '<p>Hello <a href="http://192.0.2.7/login">your bank</a><span style="display: none">x</span></p>'
    _, scratch = run(engine, message(html=html))
    assert sorted(hit_names(scratch)) == ["RAW_HIDDEN", "URL_IP"]


def test_raw_rules_read_the_raw_bytes_when_the_runtime_gives_them(tmp_path):
    engine = make_engine(tmp_path)
    raw = message(body="plain\n")
    _, scratch = run(engine, raw, scratch={"message.raw": raw.replace(b"plain", b"display: none")})
    assert hit_names(scratch) == ["RAW_HIDDEN"]


def test_a_regex_that_runs_too_long_scores_nothing_and_is_noted(tmp_path):
    rules = "rules:\n  - {name: SLOW, type: body, regex: '(a|aa)+$', score: 9}\n"
    settings = make_settings(tmp_path, rules=rules, gtube=False)
    settings.limits = Limits(regex_timeout=0.01)
    engine = spam.build(EngineOptions(name="spam", section={}), settings)
    # the text ends with a match, so the prefilter lets the rule run; the search from the start
    # backtracks through the run of a's before it gets there
    _, scratch = run(engine, message(body="a" * 5000 + "b a\n"))
    result = scratch["spam.result"]
    assert result.score == 0 and any("SLOW" in note and "timed out" in note for note in result.notes)


# ------------------------------------------------------------------ levels

def test_levels_map_to_thresholds_high_sensitivity_catches_more(tmp_path):
    engine = make_engine(tmp_path)
    raw = message(subject="winner", body="nothing else\n")       # 2.5
    assert run(engine, raw, ("level", "high"))[0] == []           # 3
    raw = message(subject="winner", body="cheap meds\n")           # 5.5
    assert run(engine, raw, ("level", "high"))[0]
    assert run(engine, raw, ("level", "medium"))[0]               # 5
    assert run(engine, raw, ("level", "low"))[0] == []            # 8


def test_levels_are_configurable(tmp_path):
    # high must come down with medium: it may not be less sensitive than medium
    engine = make_engine(tmp_path, "levels: {medium: 2, high: 1}")
    findings, _ = run(engine, message(subject="winner"), ("level", "medium"))
    assert findings and ">= 2 (level medium)" in findings[0]["detail"]


@pytest.mark.parametrize("section, line, words", [
    # the wrong way round: high sensitivity must have the lowest threshold
    ("levels:\n  low: 3\n  medium: 5\n  high: 8\n", 3, "medium (5) is above low (3)"),
    ("levels:\n  low: 8\n  medium: 5\n  high: 6\n", 4, "high (6) is above medium (5)"),
    # a level not given keeps its default, which must still fit
    ("levels:\n  medium: 2\n", 2, "high (3, the default) is above medium (2)"),
    ("levels:\n  low: 4\n", 2, "medium (5, the default) is above low (4)"),
    # a clean message scores 0: such a threshold would call everything spam
    ("levels:\n  low: 8\n  high: 0\n", 3, "above 0"),
    ("levels:\n  high: -1\n", 2, "above 0"),
])
def test_levels_out_of_order_or_not_positive_are_refused(tmp_path, section, line, words):
    with pytest.raises(ConfigError) as caught:
        make_engine(tmp_path, section)
    assert f"imss-milter.yaml:{line}: " in str(caught.value)
    assert words in str(caught.value)
    if "above 0" not in words:
        assert "expected low >= medium >= high" in str(caught.value)


def test_equal_levels_are_allowed(tmp_path):
    engine = make_engine(tmp_path, "levels: {low: 4, medium: 4, high: 4}")
    assert run(engine, message(subject="winner", body="cheap meds\n"), ("level", "low"))[0]    # 5.5


@pytest.mark.parametrize("section, key", [
    ("levels: {extreme: 1}", "extreme"),
    ("levels: {low: many}", "low"),
    ("score_header: 'Bad Header:'", "score_header"),
    ("approved_senders: ['two words@x']", "approved_senders"),
    ("exemptions: {expressions: ['(']}", "exemptions"),
    ("reputation_scores: {spam-source: high}", "reputation_scores"),
    ("colour: red", "colour"),
    ("backend: sa", "backend"),
])
def test_bad_sections_name_the_key(tmp_path, section, key):
    with pytest.raises(ConfigError) as caught:
        make_engine(tmp_path, section)
    assert caught.value.file == "imss-milter.yaml" and caught.value.line == 1
    assert key in str(caught.value)


# ------------------------------------------------------------------ sender lists and exemptions

def test_approved_sender_is_never_spam(tmp_path):
    engine = make_engine(tmp_path, "approved_senders: ['*@partner.example']")
    raw = message(body=f"{GTUBE}\n", sender="boss@partner.example")
    envelope = Envelope(sender="boss@partner.example", recipients=["user@example.com"])
    for argument in (("level", "high"), ("score", ">=", 0), ("score", "<", 5)):
        findings, scratch = run(engine, raw, argument, envelope=envelope)
        assert findings == []
    assert scratch["spam.result"].standing == "approved"


def test_approval_reads_the_envelope_sender_not_a_forged_from(tmp_path):
    engine = make_engine(tmp_path, "approved_senders: ['@partner.example']")
    raw = message(body=f"{GTUBE}\n", sender="boss@partner.example")
    findings, _ = run(engine, raw, envelope=Envelope(sender="x@elsewhere.test"))
    assert findings


def test_blocked_sender_is_always_spam(tmp_path):
    engine = make_engine(tmp_path, "blocked_senders: [spam.test]")
    for envelope_sender, header_sender in (("a@spam.test", "a@ok.example"), ("a@ok.example", "b@spam.test")):
        raw = message(sender=header_sender)
        findings, scratch = run(engine, raw, ("level", "low"), envelope=Envelope(sender=envelope_sender))
        assert findings and scratch["spam.result"].standing == "blocked"
        assert run(engine, raw, ("score", "<", 5), envelope=Envelope(sender=envelope_sender))[0] == []


def test_approved_wins_over_blocked(tmp_path):
    engine = make_engine(tmp_path, "approved_senders: ['ceo@spam.test']\nblocked_senders: ['*@spam.test']")
    _, scratch = run(engine, message(), envelope=Envelope(sender="ceo@spam.test"))
    assert scratch["spam.result"].standing == "approved"


def test_exemption_phrase_makes_a_message_never_spam(tmp_path):
    engine = make_engine(tmp_path, """\
        exemptions:
          keywords: ["Project Bluebird"]
          expressions: ['PRJ-\\d{4}']
        """)
    for text in ("About project   bluebird: cheap meds", "Ref PRJ-2024 cheap meds winner"):
        findings, scratch = run(engine, message(subject="winner", body=f"{text}\n{GTUBE}\n"), ("level", "high"))
        assert findings == [] and scratch["spam.result"].standing == "exempt"
    findings, _ = run(engine, message(body=f"PRJ-12 {GTUBE}\n"), ("level", "high"))
    assert findings          # not the project code: scored as usual


def test_exemption_in_the_subject_counts(tmp_path):
    engine = make_engine(tmp_path, "exemptions: ['bluebird']")
    findings, _ = run(engine, message(subject="Bluebird status", body=f"{GTUBE}\n"))
    assert findings == []


def test_blocked_sender_is_not_lifted_by_an_exemption_phrase(tmp_path):
    engine = make_engine(tmp_path, "blocked_senders: ['*@spam.test']\nexemptions: ['bluebird']")
    findings, _ = run(engine, message(body="bluebird\n"), envelope=Envelope(sender="x@spam.test"))
    assert findings


# ------------------------------------------------------------------ inputs from other engines

def test_dnsbl_categories_of_the_client_add_their_scores(tmp_path):
    engine = make_engine(tmp_path, "reputation_scores: {spam-source: 4.5, dynamic: 1}")
    envelope = Envelope(sender="a@b.example", reputation=["spam-source", "dynamic", "unscored"])
    findings, scratch = run(engine, message(), ("score", ">=", 5.5), envelope=envelope)
    assert findings and scratch["spam.result"].score == pytest.approx(5.5)
    assert sorted(hit_names(scratch)) == ["DNSBL:dynamic", "DNSBL:spam-source"]


def test_dnsbl_listing_scores_the_default_when_its_category_is_not_named(tmp_path):
    engine = make_engine(tmp_path)
    _, scratch = run(engine, message(), envelope=Envelope(reputation=["zen.example-dnsbl.test"]))
    assert scratch["spam.result"].score == 3


def test_url_findings_add_one_score_per_category(tmp_path):
    engine = make_engine(tmp_path, "url_scores: {phishing: 6, default: 1}")
    # what the URL engine leaves in scratch for the spam engine to read
    scratch = {"url.findings": [
        {"detail": "http://a.bad.test/ listed as phishing", "category": "phishing"},
        {"detail": "http://b.bad.test/ listed as phishing", "category": "phishing"},
        {"detail": "http://c.bad.test/ listed as spam", "category": "spam"},
        "not a finding", {"category": None},
    ]}
    findings, scratch = run(engine, message(), ("level", "medium"), scratch=scratch)
    assert findings and scratch["spam.result"].score == 7
    assert hit_names(scratch) == ["URL:phishing", "URL:spam"]


def test_engine_declares_it_reads_the_url_engine(tmp_path):
    assert "url" in make_engine(tmp_path).uses


# ------------------------------------------------------------------ the score header

def test_score_header_lists_score_and_rules(tmp_path):
    engine = make_engine(tmp_path, "score_header: X-IMSS-Spam-Score")
    _, scratch = run(engine, message(subject="winner", body="cheap meds\n"))
    assert engine.modifications(scratch) == [
        Modification("add_header", ("X-IMSS-Spam-Score", "score=5.5 rules=CHEAP_MEDS,SUBJ_WIN"))]


def test_score_header_for_clean_approved_and_blocked_mail(tmp_path):
    engine = make_engine(tmp_path, "score_header: X-Spam\napproved_senders: ['ok@a.example']\n"
                                   "blocked_senders: ['bad@a.example']")
    values = {}
    for sender in ("ok@a.example", "bad@a.example", "someone@a.example"):
        _, scratch = run(engine, message(), envelope=Envelope(sender=sender))
        values[sender] = engine.modifications(scratch)[0].args[1]
    assert values == {"ok@a.example": "score=none approved", "bad@a.example": "score=blocked",
                      "someone@a.example": "score=0"}


def test_no_header_without_the_option_or_without_a_result(tmp_path):
    engine = make_engine(tmp_path)
    _, scratch = run(engine, message(subject="winner"))
    assert engine.modifications(scratch) == []
    assert make_engine(tmp_path / "other", "score_header: X-Spam").modifications({}) == []


def test_url_findings_written_while_the_spam_engine_prepares_still_count(tmp_path):
    # the runtime runs the URL engine's prepare alongside this one: its findings may land after ours
    engine = make_engine(tmp_path, "url_scores: {phishing: 6}\nscore_header: X-Spam")
    raw = message()
    model, envelope, scratch = parse_message(raw), Envelope(reputation=["listed"]), {}
    engine.prepare(model, envelope, scratch)
    scratch["url.findings"] = [{"detail": "http://a.bad.test/", "category": "phishing"}]
    # no condition asked the engine (another policy decided): the header still has the whole score
    assert engine.modifications(scratch)[0].args[1] == "score=9 rules=DNSBL:listed,URL:phishing"
    assert engine.check("spam", ("level", "medium"), model, envelope, scratch)
