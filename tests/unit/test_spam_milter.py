"""The spam engine through the milter: a level rule tags GTUBE mail, the score header is added."""

from __future__ import annotations


import pytest

from imss_milter.milter import ImssMilter
from tests.helpers.milterctx import run_message
from tests.helpers.runtime import runtime_for

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
    rt = runtime_for(tmp_path, {"10-spam.yaml": RULES}, """\
        engines:
          spam: {backend: builtin, score_header: X-IMSS-Spam-Score, approved_senders: ["*@partner.example"]}
        """)
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
