"""End to end: a real Postfix on loopback with imss-milter as smtpd_milters, mail captured by smtp-sink.

One scenario per verdict (deliver with modifications, reject, tempfail,
delete, quarantine and release), plus the size limit, the tracking log with
Postfix queue ids, and reload of valid and invalid rules.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import struct
import time
import uuid
from email.message import EmailMessage

import pytest

from tests.helpers.daemon import MilterDaemon
from tests.helpers.postfix import PostfixInstance
from tests.helpers.stack import e2e_root, mail_stack

pytestmark = pytest.mark.e2e

TEST_RULES = """\
policies:
  - name: reject-keyword
    route: {from: any, to: any}
    when: {subject: {keywords: ["reject-me-please"]}}
    actions:
      - reject: {code: 550, xcode: 5.7.1, text: "Rejected by imss test policy"}
  - name: tempfail-keyword
    route: {from: any, to: any}
    when: {subject: {keywords: ["tempfail-me-please"]}}
    actions: [tempfail]
  - name: delete-keyword
    route: {from: any, to: any}
    when: {subject: {keywords: ["delete-me-please"]}}
    actions: [delete]
  - name: tag-offers
    route: {from: any, to: internal}
    when: {body: {keywords: ["special offer"]}}
    actions:
      - tag_subject: "[OFFER] "
      - add_header: {name: X-IMSS-Test, value: offer-tagged}
"""


def pe_executable() -> bytes:
    """A minimal PE image: MZ header pointing at a PE signature and a COFF header."""
    image = bytearray(512)
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, 0x80)
    image[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", image, 0x84, 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    return bytes(image)


def make_message(subject: str, body: str = "Hello.\n", sender: str = "alice@example.org",
                 to: str = "bob@example.com", attachment: tuple | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
    msg.set_content(body)
    if attachment:
        name, data, maintype, subtype = attachment
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


@pytest.fixture(scope="module")
def stack():
    root = e2e_root("imss-e2e-")
    with mail_stack(root, lambda postfix: MilterDaemon(root, rules={"50-test.yaml": TEST_RULES},
                                                       release_port=postfix.reinject_port)) as parts:
        yield parts


def send(postfix: PostfixInstance, raw: bytes, sender="alice@example.org", rcpts=("bob@example.com",)):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        return client.sendmail(sender, list(rcpts), raw)


def test_clean_message_is_delivered_unchanged(stack):
    sink, postfix, daemon = stack
    send(postfix, make_message("plain hello e2e-clean"))
    [captured] = sink.wait_for(1, subject_contains="e2e-clean")
    assert captured.sender == "alice@example.org"
    assert captured.recipients == ["bob@example.com"]
    assert captured.message["X-IMSS-Test"] is None


def test_matching_policy_tags_subject_and_adds_header(stack):
    sink, postfix, _ = stack
    send(postfix, make_message("weekly news e2e-tag", body="This is a Special  Offer for you.\n"))
    [captured] = sink.wait_for(1, subject_contains="e2e-tag")
    assert str(captured.message["Subject"]) == "[OFFER] weekly news e2e-tag"
    assert captured.message["X-IMSS-Test"] == "offer-tagged"
    # as written on the wire, with the space after the colon
    assert b"\nSubject: [OFFER] weekly news e2e-tag" in captured.raw
    assert b"\nX-IMSS-Test: offer-tagged" in captured.raw


def test_reject_reaches_the_smtp_client_with_the_rule_text(stack):
    sink, postfix, _ = stack
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(postfix, make_message("please reject-me-please now"))
    assert info.value.smtp_code == 550
    assert b"5.7.1" in info.value.smtp_error and b"Rejected by imss test policy" in info.value.smtp_error
    assert sink.wait_for(1, timeout=2, subject_contains="reject-me-please") == []


def test_tempfail_answers_4xx(stack):
    sink, postfix, _ = stack
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(postfix, make_message("please tempfail-me-please now"))
    assert 400 <= info.value.smtp_code < 500


def test_delete_accepts_but_does_not_deliver(stack):
    sink, postfix, daemon = stack
    send(postfix, make_message("please delete-me-please e2e-delete"))
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-delete") == []
    logs = json.loads(daemon.cli("logs", "--json", "--verdict", "delete", check=True).stdout)
    assert any("e2e-delete" in (entry.get("subject") or "") for entry in logs)


def test_disguised_executable_is_quarantined_and_released_with_its_envelope(stack):
    sink, postfix, daemon = stack
    raw = make_message("your invoice e2e-exe", attachment=("invoice.pdf", pe_executable(), "application", "pdf"))
    send(postfix, raw, rcpts=("bob@example.com", "carol@example.com"))
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-exe") == []

    listing = json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)
    [entry] = [e for e in listing if "e2e-exe" in e["subject"]]
    assert entry["sender"] == "alice@example.org"
    assert sorted(entry["recipients"]) == ["bob@example.com", "carol@example.com"]
    assert entry["rules"], "the quarantine record names the policy that held it"
    assert set(entry) >= {"id", "area", "time", "sender", "recipients", "subject", "size", "rules"}

    result = daemon.cli("quarantine", "release", entry["id"])
    assert result.returncode == 0, result.stdout + result.stderr
    [released] = sink.wait_for(1, subject_contains="e2e-exe")
    assert released.sender == "alice@example.org"
    assert sorted(released.recipients) == ["bob@example.com", "carol@example.com"]
    assert "invoice.pdf" in released.raw.decode(errors="replace")


def test_esmtp_size_over_limit_is_refused_at_mail_from(stack):
    _, postfix, _ = stack
    big = make_message("big e2e-size", body="x" * 80 + "\n" * 1)
    big = big + b"y" * (1100 * 1024)
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.ehlo()
        code, reply = client.mail("alice@example.org", options=[f"SIZE={len(big)}"])
    assert code == 552, reply
    assert b"5.3.4" in reply


def test_tracking_records_carry_the_postfix_queue_id(stack):
    sink, postfix, daemon = stack
    send(postfix, make_message("tracking e2e-track"))
    sink.wait_for(1, subject_contains="e2e-track")
    deadline = time.monotonic() + 10
    entries = []
    while time.monotonic() < deadline:
        entries = json.loads(daemon.cli("logs", "--json", "--subject", "e2e-track", check=True).stdout)
        if entries:
            break
        time.sleep(0.2)
    [entry] = entries
    assert entry["verdict"] == "deliver"
    queue_id = entry["queue_id"]
    assert queue_id and f"{queue_id}: " in postfix.log(), "the queue id is Postfix's own"
    assert f"{queue_id}: verdict=deliver" in daemon.log()


def test_reload_swaps_rules_and_keeps_them_when_invalid(stack):
    sink, postfix, daemon = stack
    daemon.write_rule("60-reload.yaml", """\
        policies:
          - name: reload-added
            route: {from: any, to: any}
            when: {subject: {keywords: ["e2e-reload"]}}
            actions: [{add_header: {name: X-Reloaded, value: "yes"}}]
        """)
    result = daemon.cli("reload")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        send(postfix, make_message("probe e2e-reload"))
        found = sink.wait_for(1, timeout=5, header=("X-Reloaded", "yes"))
        if found:
            break
    assert found, "the new rule applies after reload"

    daemon.write_rule("70-broken.yaml", "policies:\n  - name: broken\n    when: {no_such_condition: 1}\n    actions: [deliver]\n")
    result = daemon.cli("reload")
    assert result.returncode == 1, "reload validates first and refuses a broken rule set"
    assert "70-broken.yaml:3" in result.stderr and "no_such_condition" in result.stderr
    # a SIGHUP sent directly (e.g. by logrotate or systemctl reload) keeps the old rules too
    with open(daemon.pid_file) as handle:
        os.kill(int(handle.read()), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "70-broken.yaml:3" in daemon.log()
    os.unlink(os.path.join(daemon.rules_dir, "70-broken.yaml"))
    with pytest.raises(smtplib.SMTPDataError):
        send(postfix, make_message("still reject-me-please after a bad reload"))
