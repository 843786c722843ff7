"""The spam engine through the milter: a level rule tags GTUBE mail, the score header is added."""

from __future__ import annotations

import textwrap

import pytest

from imss_milter.milter import ImssMilter
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.milterctx import run_message

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RULES = """\
policies:
  - name: spam-tag
    route: {from: any, to: any}
    when: {spam: {level: medium}}
    actions: [{tag_subject: "[SPAM] "}]
"""


@pytest.fixture
def runtime(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10-spam.yaml").write_text(RULES)
    config = tmp_path / "imss-milter.yaml"
    config.write_text(textwrap.dedent(f"""\
        milter: {{user: ""}}
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        state_dir: {tmp_path / 'state'}
        engines:
          spam: {{backend: builtin, score_header: X-IMSS-Spam-Score, approved_senders: ["*@partner.example"]}}
        """))
    rt = Runtime(load_settings(str(config)))
    previous = ImssMilter.runtime
    ImssMilter.runtime = rt
    yield rt
    ImssMilter.runtime = previous


def message(body: str, subject: str = "Quarterly figures") -> bytes:
    return (f"From: alice@example.org\r\nTo: user@example.com\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n{body}\r\n").encode()


def added(outcome, name):
    return [value.strip() for field, value in outcome.added_headers if field == name]


def test_gtube_is_tagged_and_scored(runtime):
    outcome = run_message(message(f"Test message.\r\n{GTUBE}"))
    assert outcome.result in ("accept", "continue")
    assert outcome.changed_headers == [("Subject", 1, " [SPAM] Quarterly figures")]
    assert added(outcome, "X-IMSS-Spam-Score") == ["score=1000 rules=GTUBE"]


def test_clean_mail_is_not_tagged_but_gets_its_score(runtime):
    outcome = run_message(message("Please find the figures attached."))
    assert outcome.changed_headers == []
    assert added(outcome, "X-IMSS-Spam-Score") == ["score=0"]


def test_approved_sender_is_not_tagged(runtime):
    outcome = run_message(message(GTUBE), sender="boss@partner.example")
    assert outcome.changed_headers == []
    assert added(outcome, "X-IMSS-Spam-Score") == ["score=none approved"]
