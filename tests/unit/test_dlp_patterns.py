"""DLP identifiers and templates as data: the shipped seed in patterns/dlp/, an installed pattern set
under <patterns_dir>/current/dlp/, rule files overriding them, validators named from data, and
file:line errors at load, reload and in check-config."""

from __future__ import annotations

import os
import textwrap
from email.message import EmailMessage

import pytest

from imss_milter import cli
from imss_milter.engines.dlp import (PREDEFINED_IDENTIFIERS, compile_dlp, dlp_patterns_dir, load_dlp_patterns,
                                     predefined_config)
from imss_milter.engines.dlp.identifiers import KeywordIdentifier
from imss_milter.errors import ConfigError
from imss_milter.policy.types import Envelope
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A Luhn-valid 12-digit staff number: no card brand, so only a luhn-validated identifier finds it.
STAFF_ID = "EMP-7992-7398-7138"
STAFF_ID_BAD = "EMP-7992-7398-7130"

INSTALLED = """\
identifiers:
  staff-id:
    type: expression
    pattern: "EMP-\\\\d{4}-\\\\d{4}-\\\\d{4}"
    validator: luhn
    description: staff number with a Luhn check digit
  card-words:
    type: keywords
    items: [zahlungskarte]
templates:
  staff-leak: {identifier: staff-id}
  pci-dss:
    all: [{identifier: credit-card}, {identifier: card-words, distance: 40}]
"""

RULES = """\
policies:
  - name: staff-out
    route: {from: internal, to: "!internal"}
    when: {dlp: [staff-leak]}
    actions: [{quarantine: {area: dlp}}]
  - name: cards-out
    route: {from: internal, to: "!internal"}
    when: {dlp: [pci-dss]}
    actions: [reject]
"""


def write_config(tmp_path, rules: str = RULES, patterns_dir=None) -> str:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "50-dlp.yaml").write_text(rules)
    path = tmp_path / "imss-milter.yaml"
    path.write_text(textwrap.dedent(f"""\
        milter: {{user: ""}}
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        patterns_dir: {patterns_dir or tmp_path / 'patterns'}
        state_dir: {tmp_path / 'state'}
        """))
    return str(path)


def install(tmp_path, files: dict[str, str], version: str = "7") -> str:
    """A pattern set as the updater leaves it: versions/N/dlp/*.yaml and current -> versions/N."""
    root = tmp_path / "patterns"
    target = root / "versions" / version / "dlp"
    target.mkdir(parents=True)
    for name, text in files.items():
        (target / name).write_text(text)
    current = root / "current"
    if current.is_symlink():
        current.unlink()
    current.symlink_to(root / "versions" / version)
    return str(root)


def email(body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@partner.test"
    msg["Subject"] = "numbers"
    msg.set_content(body)
    return msg.as_bytes()


def scan(runtime: Runtime, body: str):
    return runtime.scan(email(body), Envelope(sender="alice@example.com", recipients=["bob@partner.test"]))


# --- the shipped seed -----------------------------------------------------------------------------------

def test_seed_set_is_the_repository_patterns_dir_and_defines_the_keyword_lists(tmp_path):
    assert os.path.realpath(dlp_patterns_dir(None)) == os.path.join(REPO, "patterns", "dlp")
    # no installed set under this patterns_dir: the seed is used
    assert os.path.realpath(dlp_patterns_dir(str(tmp_path))) == os.path.join(REPO, "patterns", "dlp")
    assert os.path.exists(os.path.join(REPO, "patterns", "dlp", "00-identifiers.yaml"))
    # keyword lists are data now, validator-backed identifiers stay in code
    assert "card-words" not in PREDEFINED_IDENTIFIERS and "credit-card" in PREDEFINED_IDENTIFIERS
    config = predefined_config()
    assert isinstance(config.identifiers["card-words"], KeywordIdentifier)
    assert "cvv" in config.identifiers["card-words"].items
    assert "chemotherapy" in config.identifiers["health-terms"].items
    assert {"pci-dss", "health", "pii", "secrets"} <= config.template_names


def test_seed_templates_still_judge_mail(tmp_path):
    runtime = Runtime(load_settings(write_config(tmp_path, RULES.replace("staff-leak", "secrets"))),
                      store=False, sender_filter=False)
    one_card_with_cvv = scan(runtime, "card 4111 1111 1111 1111 cvv 123\n")
    assert one_card_with_cvv.verdict.action == "reject"
    [finding] = [f for f in one_card_with_cvv.verdict.findings if f.get("template") == "pci-dss"]
    assert finding["identifiers"] == {"credit-card": 1, "card-words": 1}
    # a card with no card words near it is not pci-dss
    assert scan(runtime, "order 4111 1111 1111 1111 shipped\n").verdict.action == "deliver"


# --- an installed pattern set -------------------------------------------------------------------------

def test_installed_set_replaces_the_seed_and_its_validator_is_named_in_data(tmp_path):
    patterns_dir = install(tmp_path, {"10-staff.yaml": INSTALLED})
    assert dlp_patterns_dir(patterns_dir) == os.path.join(patterns_dir, "current", "dlp")
    runtime = Runtime(load_settings(write_config(tmp_path, patterns_dir=patterns_dir)),
                      store=False, sender_filter=False)
    held = scan(runtime, f"new starter {STAFF_ID}\n")
    assert held.verdict.action == "quarantine" and held.verdict.rules == ["staff-out"]
    [finding] = [f for f in held.verdict.findings if f.get("template") == "staff-leak"]
    assert finding["identifiers"] == {"staff-id": 1}
    assert STAFF_ID not in str(finding) and finding["values"]["staff-id"][0].startswith("79")
    # the check digit is wrong: the validator rejects it
    assert scan(runtime, f"new starter {STAFF_ID_BAD}\n").verdict.action == "deliver"
    # the installed card-words (not the seed's) are what pci-dss is near
    assert scan(runtime, "zahlungskarte 4111 1111 1111 1111\n").verdict.action == "reject"
    assert scan(runtime, "cvv 4111 1111 1111 1111\n").verdict.action == "deliver"


def test_rule_files_override_pattern_identifiers_by_name(tmp_path):
    patterns_dir = install(tmp_path, {"10-staff.yaml": INSTALLED})
    rules = RULES + textwrap.dedent("""\
        dlp:
          identifiers:
            card-words: {type: keywords, items: [kartennummer]}
        """)
    runtime = Runtime(load_settings(write_config(tmp_path, rules, patterns_dir)), store=False, sender_filter=False)
    assert scan(runtime, "kartennummer 4111 1111 1111 1111\n").verdict.action == "reject"
    assert scan(runtime, "zahlungskarte 4111 1111 1111 1111\n").verdict.action == "deliver"


def test_named_validators_bring_their_masks(tmp_path):
    patterns = load_dlp_patterns(install(tmp_path, {"10-cards.yaml": textwrap.dedent("""\
        identifiers:
          corporate-card:
            type: expression
            pattern: "CORP:[0-9 ]{13,23}"
            validator: card-number
        """)}))
    config = compile_dlp([], patterns=patterns)
    [match] = config.scanner.scan("pay with CORP:4111 1111 1111 1111 today").matches["corporate-card"]
    assert match.masked == "4111********1111"
    assert not config.scanner.scan("CORP:4111 1111 1111 1112").matches.get("corporate-card")


def test_reload_picks_up_a_new_pattern_version_and_keeps_the_old_one_when_broken(tmp_path):
    patterns_dir = install(tmp_path, {"10-staff.yaml": INSTALLED}, version="1")
    runtime = Runtime(load_settings(write_config(tmp_path, patterns_dir=patterns_dir)),
                      store=False, sender_filter=False)
    assert scan(runtime, f"id {STAFF_ID}\n").verdict.action == "quarantine"
    # version 2 drops the staff template that a rule uses: the reload is refused, mail judged as before
    install(tmp_path, {"10-staff.yaml": INSTALLED.replace("staff-leak:", "other-leak:")}, version="2")
    assert runtime.reload() is False
    assert scan(runtime, f"id {STAFF_ID}\n").verdict.action == "quarantine"
    # version 3 changes the pattern: picked up by the reload
    install(tmp_path, {"10-staff.yaml": INSTALLED.replace("EMP-", "STAFF-")}, version="3")
    assert runtime.reload() is True
    assert scan(runtime, f"id {STAFF_ID}\n").verdict.action == "deliver"
    assert scan(runtime, "id STAFF-7992-7398-7138\n").verdict.action == "quarantine"


# --- mistakes name the pattern file and line ----------------------------------------------------------

BAD_FILES = [
    ("identifiers:\n  x: {type: expression, pattern: 'A\\d+', validator: crc32}\n", 2, "validator: expected one of"),
    ("identifiers:\n  x: {type: keywords, items: [a]}\nwords: [b]\n", 3, "unknown key 'words'"),
    ("templates:\n  t:\n    any:\n      - {identifier: no-such-thing}\n", 4, "unknown identifier 'no-such-thing'"),
    ("- just\n- a list\n", 1, "expected a DLP pattern mapping"),
    ("identifiers: {x: [unclosed\n", 2, ""),
    ("identifiers:\n  x: {type: expression, pattern: '(unbalanced', validator: [luhn]}\n", 2, ""),
]


@pytest.mark.parametrize("text,line,message", BAD_FILES)
def test_bad_pattern_files_raise_config_error_with_file_and_line(tmp_path, text, line, message):
    patterns_dir = install(tmp_path, {"00-ok.yaml": INSTALLED, "20-bad.yaml": text})
    with pytest.raises(ConfigError) as caught:
        compile_dlp([], patterns=load_dlp_patterns(patterns_dir))
    error = str(caught.value)
    assert error.startswith(os.path.join(patterns_dir, "current", "dlp", "20-bad.yaml") + f":{line}:"), error
    assert message in error


def test_check_config_reports_a_bad_pattern_file(tmp_path, capsys):
    patterns_dir = install(tmp_path, {"10-staff.yaml": INSTALLED.replace("validator: luhn", "validator: lunh")})
    config = write_config(tmp_path, patterns_dir=patterns_dir)
    assert cli.main(["--config", config, "check-config"]) == 1
    err = capsys.readouterr().err
    assert "current/dlp/10-staff.yaml:5:" in err and "'lunh'" in err
    # fixed: check-config passes and names where the DLP patterns came from
    install(tmp_path, {"10-staff.yaml": INSTALLED}, version="8")
    assert cli.main(["--config", config, "check-config"]) == 0
    assert os.path.join(patterns_dir, "current", "dlp") in capsys.readouterr().out


def test_an_empty_pattern_file_defines_nothing(tmp_path):
    patterns_dir = install(tmp_path, {"00-empty.yaml": "", "10-staff.yaml": INSTALLED})
    config = compile_dlp([], patterns=load_dlp_patterns(patterns_dir))
    assert "staff-id" in config.identifiers and "health-terms" not in config.identifiers
