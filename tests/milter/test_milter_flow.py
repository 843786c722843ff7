"""Milter-level tests: ImssMilter driven through pymilter's Milter.testctx with raw messages."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import textwrap
from email.message import EmailMessage

import pytest

from imss_milter.milter import ImssMilter
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.milterctx import run_message

RULES = """\
policies:
  - name: hold-exe
    route: {from: any, to: internal}
    when: {attachment.name: ["*.exe"]}
    actions: [{quarantine: {area: default}}]
  - name: refuse-word
    route: {from: any, to: any}
    when: {subject: {keywords: ["refuse-this"]}}
    actions: [{reject: {code: 550, xcode: 5.7.1, text: "100% refused by policy"}}]
  - name: defer-word
    route: {from: any, to: any}
    when: {subject: {keywords: ["defer-this"]}}
    actions: [tempfail]
  - name: drop-word
    route: {from: any, to: any}
    when: {subject: {keywords: ["drop-this"]}}
    actions: [delete]
  - name: mark
    route: {from: any, to: any}
    when: {body: {keywords: ["lottery"]}}
    actions:
      - tag_subject: "[SUSPECT] "
      - add_header: {name: X-IMSS-Mark, value: lottery}
      - bcc: [audit@example.com]
"""


def message(subject="hello", body="Just text.\n", attachment=None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "user@example.com"
    msg["Subject"] = subject
    msg.set_content(body)
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


@pytest.fixture
def runtime(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10-test.yaml").write_text(RULES)
    config = tmp_path / "imss-milter.yaml"
    config.write_text(textwrap.dedent(f"""\
        milter: {{max_message_size: 200KB, spool_memory_limit: 4KB, user: ""}}
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        state_dir: {tmp_path / 'state'}
        """))
    settings = load_settings(str(config))
    rt = Runtime(settings)
    previous = ImssMilter.runtime
    ImssMilter.runtime = rt
    yield rt
    ImssMilter.runtime = previous


def test_clean_message_continues_without_changes(runtime):
    outcome = run_message(message())
    assert outcome.result == "continue"
    assert outcome.added_headers == [] and outcome.changed_headers == []
    [record] = runtime.store.query_logs(kind="messages", queue_id="TESTQ1")
    assert record["verdict"] == "deliver"


def test_modifications_of_a_delivered_message(runtime):
    outcome = run_message(message(subject="Win big", body="You won the LOTTERY today\n"))
    assert outcome.result == "continue"
    # values carry the space after the colon: the milter negotiated P_HDR_LEADSPC
    assert ("X-IMSS-Mark", " lottery") in outcome.added_headers
    assert outcome.changed_headers == [("Subject", 1, " [SUSPECT] Win big")]
    assert [r for r, _ in outcome.added_recipients] == ["<audit@example.com>"]


def test_reject_uses_the_rule_reply_and_escapes_percent(runtime):
    outcome = run_message(message(subject="please refuse-this"))
    assert outcome.result == "reject"
    assert outcome.reply[0:2] == ("550", "5.7.1")
    assert "100%% refused by policy" in outcome.reply[2]    # libmilter needs %% for a literal %


def test_tempfail_and_delete(runtime):
    assert run_message(message(subject="defer-this")).result == "tempfail"
    assert run_message(message(subject="drop-this")).result == "discard"


def test_quarantine_is_stored_before_discard(runtime):
    outcome = run_message(message(attachment=("tool.exe", b"MZ" + b"\0" * 200)), queue_id="QEXE1")
    assert outcome.result == "discard"
    [held] = runtime.store.list()
    assert held["rules"] == ["hold-exe"]
    assert held["recipients"] == ["user@example.com"]
    raw = runtime.store.read_raw(held["id"])
    assert b'filename="tool.exe"' in raw
    [record] = runtime.store.query_logs(kind="messages", queue_id="QEXE1")
    assert record["verdict"] == "quarantine"


def test_quarantine_write_failure_answers_tempfail_and_keeps_the_message(runtime, tmp_path):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    blocker = state / "quarantine"
    if blocker.exists():
        os.rename(blocker, state / "quarantine.moved")
    blocker.write_text("not a directory")        # the store cannot create its area directory
    outcome = run_message(message(attachment=("tool.exe", b"MZ" + b"\0" * 200)))
    assert outcome.result == "tempfail"
    assert outcome.reply[0].startswith("4")


def test_internal_error_answers_tempfail_or_accept_per_on_error(runtime, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")
    monkeypatch.setattr("imss_milter.runtime.parse_message", broken)
    with caplog.at_level(logging.ERROR, logger="imss_milter"):
        outcome = run_message(message(), queue_id="QERR1")
    assert outcome.result == "tempfail"
    assert any("QERR1: internal error in eom" in r.getMessage() for r in caplog.records)

    accepting = dataclasses.replace(runtime.settings,
                                    milter=dataclasses.replace(runtime.settings.milter, on_error="accept"))
    runtime.settings = accepting
    assert run_message(message()).result == "accept"


def test_esmtp_size_over_limit_rejected_at_mail_from(runtime):
    from tests.helpers import milterctx
    ctx = milterctx.RecordingCtx()
    import Milter
    Milter.factory = ImssMilter
    try:
        ctx._connect(ip="192.0.2.1")
        rc = ctx._envfrom("<a@example.org>", "SIZE=999999999")
        assert rc == Milter.REJECT
        assert ctx._reply[:2] == ("552", "5.3.4")
    finally:
        ctx._close()


def test_body_over_limit_is_rejected_at_end_of_message(runtime):
    outcome = run_message(message(body="x" * 300 * 1024))
    assert outcome.result == "reject"
    assert outcome.reply[:2] == ("552", "5.3.4")


def test_message_spooled_to_disk_is_scanned_whole(runtime):
    # 4 KB memory limit: the attachment comes after the spool moved to disk
    raw = message(body="y" * 20000, attachment=("late.exe", b"MZ" + b"\0" * 1000))
    assert run_message(raw).result == "discard"


def test_each_connection_keeps_the_rules_it_started_with(runtime, tmp_path):
    milter = ImssMilter()
    try:
        (tmp_path / "rules" / "10-test.yaml").write_text("policies: []\n")
        assert runtime.reload()
        assert milter.rules is not runtime.rules
        assert [p.name for p in milter.rules.policies][:1] == ["hold-exe"]
    finally:
        milter.close()
    assert run_message(message(subject="refuse-this")).result == "continue"


def test_reload_with_invalid_rules_keeps_the_old_ones(runtime, tmp_path, caplog):
    (tmp_path / "rules" / "20-bad.yaml").write_text("policies:\n  - name: x\n    actions: [explode]\n")
    with caplog.at_level(logging.ERROR, logger="imss_milter"):
        assert runtime.reload() is False
    assert any("20-bad.yaml:3" in r.getMessage() for r in caplog.records)
    assert run_message(message(subject="refuse-this")).result == "reject"


def test_malformed_and_random_input_never_breaks_a_callback(runtime):
    rng = random.Random(1234)
    base = message(subject="fuzz", attachment=("a.bin", bytes(range(256)) * 4))
    answers = set()
    for _ in range(60):
        data = bytearray(base)
        for _ in range(rng.randint(1, 40)):
            pos = rng.randrange(len(data))
            data[pos] = rng.choice(b"\r\n:;=\"-\x00\xff<>boundary")
        cut = rng.randint(len(data) // 3, len(data))
        outcome = run_message(bytes(data[:cut]))
        answers.add(outcome.result)
    # every message got a content verdict; none fell into the internal-error path
    assert "tempfail" not in answers


def raw_message(subject_bytes: bytes, body=b"You won the lottery\n") -> bytes:
    return (b"From: alice@example.org\r\nTo: user@example.com\r\nSubject: " + subject_bytes +
            b"\r\nContent-Type: text/plain\r\n\r\n" + body)


@pytest.mark.parametrize("subject, expected", [
    (b"caf\xe9 au lait", "[SUSPECT] café au lait"),                 # raw Latin-1 bytes
    (b"caf\xc3\xa9 cr\xc3\xa8me", "[SUSPECT] café crème"),        # raw UTF-8 bytes
    (b"=?iso-8859-1?q?caf=E9?= noir", "[SUSPECT] café noir"),        # RFC 2047
])
def test_tagging_a_non_ascii_subject_gives_a_valid_header(runtime, subject, expected):
    import email.header
    outcome = run_message(raw_message(subject))
    assert outcome.result == "continue"
    [(name, index, value)] = outcome.changed_headers
    assert value.startswith(" ") and value.isascii()
    decoded = str(email.header.make_header(email.header.decode_header(value.strip())))
    assert decoded == expected


def test_scanner_failure_answers_tempfail_not_deliver(runtime, monkeypatch):
    import imss_milter.runtime as runtime_module
    real_parse = runtime_module.parse_message

    def parse_with_internal_error(raw, limits):
        model = real_parse(raw, limits)
        model.errors = ["archives: LookupError: unknown encoding: cp437"]
        return model
    monkeypatch.setattr(runtime_module, "parse_message", parse_with_internal_error)
    outcome = run_message(message(attachment=("tool.exe", b"MZ" + b"\0" * 200)), queue_id="QSCANERR")
    assert outcome.result == "tempfail"
    assert runtime.store.list() == []


def test_batched_tracking_records_are_all_written_when_the_writer_stops(runtime):
    runtime.start_log_writer(interval=5.0)          # long interval: only the stop flushes
    try:
        for index in range(20):
            assert run_message(message(), queue_id=f"QB{index}").result == "continue"
    finally:
        runtime.stop_log_writer()
    queue_ids = {r["queue_id"] for r in runtime.store.query_logs(kind="messages", limit=100)}
    assert {f"QB{index}" for index in range(20)} <= queue_ids


# -- replies the MTA waits for ------------------------------------------------------------------

def _negotiated(runtime):
    """A fresh connection's negotiated protocol bits (all offered, as Postfix 3 does)."""
    import Milter
    from tests.helpers import milterctx
    ctx = milterctx.RecordingCtx()
    Milter.factory = ImssMilter
    ctx._negotiate()
    return ctx


def test_without_sender_filtering_connect_and_rcpt_need_no_reply(runtime):
    """Nothing can be refused at CONNECT or RCPT TO: the MTA is told not to wait for those replies
    (a no-op milter answering them was 11% slower under Postfix). MAIL FROM still answers (SIZE)."""
    import Milter
    ctx = _negotiated(runtime)
    try:
        assert ctx._protocol & Milter.P_NR_CONN and ctx._protocol & Milter.P_NR_RCPT
        assert not ctx._protocol & Milter.P_NR_MAIL
    finally:
        ctx._close()
    outcome = run_message(message(), recipients=("user@example.com", "other@example.com"))
    assert outcome.result == "continue"
    [record] = runtime.store.query_logs(kind="messages", queue_id="TESTQ1")
    assert record["recipients"] == ["user@example.com", "other@example.com"]


def test_with_sender_filtering_connect_and_rcpt_still_answer(runtime, monkeypatch):
    import Milter

    class Enabled:
        enabled = True
    monkeypatch.setattr(runtime, "sender_filter", Enabled())
    ctx = _negotiated(runtime)
    try:
        assert not ctx._protocol & (Milter.P_NR_CONN | Milter.P_NR_RCPT)
    finally:
        ctx._close()


def test_a_stopping_worker_refuses_new_connections_at_connect(runtime):
    from imss_milter.milter import activity
    activity.draining = True
    try:
        outcome = run_message(message())
    finally:
        activity.draining = False
    assert (outcome.result, outcome.stage) == ("tempfail", "connect")
    assert outcome.reply[:2] == ("421", "4.3.2")


def test_a_failure_at_a_connect_without_reply_is_answered_at_mail_from(runtime, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("connect exploded")
    monkeypatch.setattr(runtime.metrics, "connection", broken)     # counted in connect()
    with caplog.at_level(logging.ERROR, logger="imss_milter"):
        outcome = run_message(message(), queue_id="QCONN1")
    assert (outcome.result, outcome.stage) == ("tempfail", "envfrom")
    assert any("internal error in connect" in r.getMessage() for r in caplog.records)
