"""Content verdicts feed the IP Profiler: a client that keeps sending viruses or spam gets blocked.

Through the milter callbacks with the real built-in antivirus and spam
engines (EICAR and GTUBE), and the real SenderFilter on its own state dir.
"""

from __future__ import annotations

import base64

import pytest

from imss_milter.milter import ImssMilter
from tests.helpers.milterctx import run_message
from tests.helpers.runtime import runtime_for

EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RULES = """\
policies:
  - name: mark-viruses
    route: {from: any, to: any}
    when: {virus: true}
    actions: [{add_header: {name: X-Virus, value: "yes"}}]
  - name: tag-spam
    route: {from: any, to: any}
    when: {spam: {level: medium}}
    actions: [{tag_subject: "[SPAM] "}]
"""


@pytest.fixture
def runtime(tmp_path):
    rt = runtime_for(tmp_path, {"10-content.yaml": RULES}, """\
        sender_filtering:
          approved_hosts: ["192.0.2.99"]
          ip_profiler:
            virus: {threshold: 2, window: 1h, block: 1h, action: reject}
            spam:  {threshold: 2, window: 1h, block: 1h, action: tempfail}
        """)
    previous = ImssMilter.runtime
    ImssMilter.runtime = rt
    yield rt
    ImssMilter.runtime = previous
    rt.sender_filter.close()


def message(body: str, attachment: str | None = None) -> bytes:
    head = ("From: alice@example.org\r\nTo: user@example.com\r\nSubject: Quarterly figures\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n")
    if attachment is None:
        return (head + f"\r\n{body}\r\n").encode()
    encoded = base64.b64encode(attachment.encode()).decode()
    return (head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            f"--b1\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
            '--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="a.com"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b1--\r\n").encode()


def test_viruses_count_towards_the_profiler_until_the_client_is_refused(runtime):
    ip = "192.0.2.50"
    for _ in range(2):
        outcome = run_message(message("See attached.", attachment=EICAR), ip=ip)
        assert outcome.result == "continue" and ("X-Virus", " yes") in outcome.added_headers
    refused = run_message(message("Hello again."), ip=ip)
    assert refused.stage == "connect" and refused.result == "reject"
    assert "IP Profiler (virus)" in refused.reply[-1]
    assert run_message(message("Hello."), ip="192.0.2.51").result == "continue"     # others unaffected


def test_spam_counts_towards_the_profiler(runtime):
    ip = "192.0.2.60"
    for _ in range(2):
        outcome = run_message(message(f"Buy now.\r\n{GTUBE}"), ip=ip)
        assert outcome.changed_headers == [("Subject", 1, " [SPAM] Quarterly figures")]
    refused = run_message(message("Hello again."), ip=ip)
    assert refused.stage == "connect" and refused.result == "tempfail"
    assert "IP Profiler (spam)" in refused.reply[-1]


def test_clean_mail_does_not_count(runtime):
    ip = "192.0.2.70"
    for _ in range(4):
        assert run_message(message("Minutes attached.", attachment="just the minutes\n"), ip=ip).result == "continue"
    assert runtime.sender_filter.blocked() == []


def test_approved_hosts_are_never_counted(runtime):
    for _ in range(3):
        outcome = run_message(message("See attached.", attachment=EICAR), ip="192.0.2.99")
        assert ("X-Virus", " yes") in outcome.added_headers
    assert runtime.sender_filter.blocked() == []
    assert run_message(message("Hello."), ip="192.0.2.99").result == "continue"
