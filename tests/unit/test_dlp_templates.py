"""DLP templates: thresholds, proximity, all/any/not, admin identifiers, and rule-file validation with file:line."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from imss_milter.engines.dlp import DlpEngine
from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.policy import compile_rules
from imss_milter.policy.types import Envelope

CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005", "6011 1111 1111 1117",
         "3530 1113 3330 0000", "4012 8888 8888 1881"]

ADMIN_RULES = """\
dlp:
  identifiers:
    project-code: {type: expression, pattern: "PRJ-\\\\d{6}"}
    cvv-words: {type: keywords, items: [cvv, cvc, "security code"]}
    big-sheets: {type: file, true_type: [document], size: ">1KB"}
    luhn-ref: {type: expression, pattern: "REF\\\\d{8}", validator: luhn, case_sensitive: true}
  templates:
    cards-bulk:
      any:
        - {identifier: credit-card, min_count: 5}
        - all: [{identifier: credit-card}, {identifier: cvv-words, distance: 50}]
    projects: {identifier: project-code, min_count: 2}
    no-cards: {not: {identifier: credit-card}}
    clustered-cvv: {identifier: cvv-words, min_count: 3, distance: 20}
    refs: {identifier: luhn-ref}
    big-docs: {identifier: big-sheets}
policies:
  - name: outbound-cards
    route: {from: internal, to: "!internal"}
    when: {dlp: [cards-bulk]}
    actions: [{quarantine: {area: dlp}}]
"""


def rules(text: str = ADMIN_RULES):
    return compile_rules([("/etc/imss-milter/rules/50-dlp.yaml", text)], internal_domains=["example.com"])


def message(body: str, subject: str = "report", attachment: tuple | None = None):
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@partner.test"
    msg["Subject"] = subject
    msg.set_content(body)
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return parse_message(msg.as_bytes())


def check(templates, model, ruleset=None):
    engine = DlpEngine().for_rules(ruleset or rules())
    return engine.check("dlp", tuple(templates), model, Envelope(), {})


def test_min_count_threshold():
    assert check(["cards-bulk"], message("cards: " + ", ".join(CARDS[:4]))) == []
    [finding] = check(["cards-bulk"], message("cards: " + ", ".join(CARDS[:5])))
    assert finding["template"] == "cards-bulk"
    assert finding["identifiers"] == {"credit-card": 5}
    assert finding["where"] == "body"


def test_one_card_near_a_keyword_matches_far_does_not():
    near = message(f"card {CARDS[0]} cvv 123")
    far = message(f"card {CARDS[0]} " + "filler " * 20 + "cvv 123")
    [finding] = check(["cards-bulk"], near)
    assert finding["identifiers"] == {"credit-card": 1, "cvv-words": 1}
    assert finding["values"]["cvv-words"] == ["cvv"]
    assert check(["cards-bulk"], far) == []


def test_proximity_is_within_one_text_only():
    model = message(f"card {CARDS[0]}", subject="cvv inside")
    assert check(["cards-bulk"], model) == []


def test_min_count_counts_over_body_and_attachments():
    model = message("cards: " + ", ".join(CARDS[:3]), attachment=("more.txt", ", ".join(CARDS[3:5]).encode()))
    findings = check(["cards-bulk"], model)
    assert sorted(f["where"] for f in findings) == ["attachment more.txt", "body"]
    assert sum(f["identifiers"]["credit-card"] for f in findings) == 5
    assert [f.get("path") for f in findings if f["where"] != "body"] == [["more.txt"]]


def test_admin_expression_and_not():
    assert check(["projects"], message("see PRJ-123456")) == []
    [finding] = check(["projects"], message("see PRJ-123456 and prj-654321"))
    assert finding["identifiers"] == {"project-code": 2}
    assert check(["no-cards"], message("nothing here"))[0]["template"] == "no-cards"
    assert check(["no-cards"], message(f"card {CARDS[0]}")) == []


def test_keywords_clustered_by_distance():
    assert check(["clustered-cvv"], message("cvv, cvc and security code")) != []
    assert check(["clustered-cvv"], message("cvv " + "x" * 30 + " cvc " + "y" * 30 + " security code")) == []


def test_admin_validator():
    assert check(["refs"], message("REF12345675")) == []      # fails Luhn
    [finding] = check(["refs"], message("REF12345674 ok"))     # passes Luhn
    assert finding["values"]["luhn-ref"] == ["1*******"]
    assert check(["refs"], message("ref12345674")) == []      # case_sensitive: true


def test_file_identifier_by_true_type_and_size():
    docx_like = b"PK\x03\x04" + b"\0" * 26 + b"[Content_Types].xml" + b"\0" * 2000
    model = message("see attached", attachment=("big.docx", docx_like))
    part = [p for p in model.parts if p.names == ["big.docx"]][0]
    findings = check(["big-docs"], model)
    assert (part.true_type == "document") == bool(findings)


def test_predefined_templates():
    assert check(["pci-dss"], message(f"Card number: {CARDS[0]}, expiry 12/29")) != []
    assert check(["pci-dss"], message(f"order {CARDS[0]}")) == []
    assert check(["pii"], message("Employee SSN 536-22-1234")) != []
    health = message("Patient was diagnosed with diabetes. Date of birth: 1961-07-02.")
    assert check(["health"], health)[0]["template"] == "health"
    assert check(["health"], message("Patient was diagnosed with diabetes.")) == []
    assert check(["secrets"], message("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n")) != []


def test_policy_quarantines_outbound_cards_with_masked_findings():
    ruleset = rules()
    model = message("cards: " + ", ".join(CARDS[:5]))
    envelope = Envelope(sender="alice@example.com", recipients=["bob@partner.test"])
    verdict = ruleset.evaluate(envelope, model, {"dlp": DlpEngine().for_rules(ruleset)})
    assert verdict.action == "quarantine" and verdict.rules == ["outbound-cards"]
    assert verdict.findings[0]["values"]["credit-card"][0] == "4111********1111"
    text = repr(verdict.findings)
    for card in CARDS[:5]:
        assert card not in text and card.replace(" ", "") not in text
    inbound = Envelope(sender="bob@partner.test", recipients=["alice@example.com"])
    assert ruleset.evaluate(inbound, model, {"dlp": DlpEngine().for_rules(ruleset)}).action == "deliver"


@pytest.mark.parametrize("snippet,line,expected", [
    ("dlp:\n  identifiers:\n    x: {type: regex, pattern: a}\n", 3, "expected expression, keywords or file"),
    ("dlp:\n  identifiers:\n    x: {type: expression, pattern: \"a(\"}\n", 3, "bad regular expression"),
    ("dlp:\n  identifiers:\n    x: {type: expression, pattern: \"a|\"}\n", 3, "matches the empty string"),
    ("dlp:\n  identifiers:\n    x: {type: keywords, items: []}\n", 3, "non-empty list"),
    ("dlp:\n  identifiers:\n    x: {type: file, true_type: [spreadsheet]}\n", 3, "expected a MIME type or one of"),
    ("dlp:\n  identifiers:\n    x: {type: file, size: big}\n", 3, "comparison like"),
    ("dlp:\n  identifiers:\n    x: {type: file}\n", 3, "at least one of"),
    ("dlp:\n  identifiers:\n    x: {type: expression, pattern: a, colour: red}\n", 3, "unknown key 'colour'"),
    ("dlp:\n  templates:\n    t:\n      any:\n        - {identifier: nope}\n", 5, "unknown identifier 'nope'"),
    ("dlp:\n  templates:\n    t: {identifier: credit-card, min_count: 0}\n", 3, "min_count"),
    ("dlp:\n  templates:\n    t: {identifier: credit-card, distance: -1}\n", 3, "distance"),
    ("dlp:\n  templates:\n    t: {any: []}\n", 3, "non-empty list"),
    ("dlp:\n  templates:\n    t: {any: [{identifier: email}], all: [{identifier: email}]}\n", 3, "exactly one of"),
    ("dlp:\n  colour: red\n", 2, "unknown key 'colour' in dlp"),
    ("policies:\n  - name: p\n    when: {dlp: [not-a-template]}\n    actions: [deliver]\n", 3, "unknown template"),
])
def test_rule_file_errors_name_file_and_line(snippet, line, expected):
    with pytest.raises(ConfigError) as info:
        rules(snippet)
    assert expected in str(info.value)
    assert info.value.file == "/etc/imss-milter/rules/50-dlp.yaml" and info.value.line == line


def test_template_may_use_identifier_from_a_later_file_and_later_files_replace():
    first = "dlp:\n  templates:\n    t: {identifier: later-id}\n"
    second = "dlp:\n  identifiers:\n    later-id: {type: keywords, items: [blue]}\n"
    third = "dlp:\n  identifiers:\n    later-id: {type: keywords, items: [green]}\n"
    ruleset = compile_rules([("/r/10.yaml", first), ("/r/20.yaml", second), ("/r/30.yaml", third)])
    assert check(["t"], message("green light"), ruleset) != []
    assert check(["t"], message("blue light"), ruleset) == []


def test_check_config_reports_a_bad_dlp_section_with_file_and_line(tmp_path, capsys):
    from imss_milter import cli
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "50-dlp.yaml").write_text("dlp:\n  templates:\n    t: {identifier: credit-crad}\n")
    config = tmp_path / "imss-milter.yaml"
    config.write_text(f"rules_dir: {rules_dir}\nstate_dir: {tmp_path / 'state'}\nmilter: {{user: \"\"}}\n")
    assert cli.main(["--config", str(config), "check-config"]) == 1
    err = capsys.readouterr().err
    assert "50-dlp.yaml:3" in err and "unknown identifier 'credit-crad'" in err
