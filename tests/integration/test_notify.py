"""Notifications: config validation, templates, and the background queue sending to Postfix's smtp-sink."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from imss_milter.errors import ConfigError
from imss_milter.notify import (Notifier, is_notification, parse_notifications, render,
                                resolve_recipients)
from imss_milter.policy.types import Envelope
from imss_milter.yamlconf import loads_yaml
from tests.helpers.net import free_port
from tests.helpers.postfix import SMTP_SINK, SmtpSink

needs_sink = pytest.mark.skipif(not os.path.exists(SMTP_SINK), reason="smtp-sink (postfix) is not installed")


def section(text: str):
    return loads_yaml(text, "/etc/imss-milter/imss-milter.yaml")["notifications"]


@pytest.mark.parametrize("text, line, expected", [
    ("notifications:\n  smtp: nowhere\n", 2, "HOST:PORT"),
    ("notifications:\n  smtp: 127.0.0.1:25\n  admins: [root]\n", 3, "email address"),
    ("notifications:\n  colour: blue\n", 2, "unknown key 'colour'"),
    ("notifications:\n  events:\n    disk-full: {to: [admin]}\n", 3, "unknown event"),
    ("notifications:\n  events:\n    ip-blocked: {to: [nobody]}\n", 3, "admin, sender, recipients"),
    ("notifications:\n  retry_interval: soon\n", 2, "duration"),
])
def test_bad_settings_name_file_and_line(text, line, expected):
    with pytest.raises(ConfigError) as info:
        parse_notifications(section(text))
    message = str(info.value)
    assert "imss-milter.yaml" in message and f":{line}" in message and expected in message


def test_templates_fill_variables_and_keep_the_subject_one_line():
    subject, body = render("Subject: [x] $subject\n\nFrom $sender, rule $rule, $unknown\n",
                           {"subject": "evil\r\nBcc: victim@example.com", "sender": "a@b", "rule": "r1"})
    assert subject == "[x] evil Bcc: victim@example.com"
    assert body == "From a@b, rule r1, $unknown\n"


def test_people_resolve_and_the_null_sender_is_never_a_recipient():
    envelope = Envelope(sender="", recipients=["bob@example.com"])
    assert resolve_recipients(["admin", "sender", "recipients"], ("root@example.com",), envelope) == \
        ["root@example.com", "bob@example.com"]


def test_automatic_mail_is_recognised():
    assert is_notification([(b"X-IMSS-Notification", b" yes")])
    assert is_notification([("Auto-Submitted", " auto-replied")])
    assert not is_notification([("Auto-Submitted", " no"), ("Subject", "hi")])


@pytest.fixture
def sink_root():
    root = tempfile.mkdtemp(prefix="imss-notify-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_sink
def test_event_notification_reaches_the_relay(sink_root):
    sink = SmtpSink(sink_root).start()
    results = []
    try:
        settings = parse_notifications(section(f"""\
notifications:
  smtp: "127.0.0.1:{sink.port}"
  from: gateway@example.com
  admins: [admin@example.com]
  events:
    ip-blocked: {{to: [admin, soc@example.com]}}
"""))
        notifier = Notifier(settings, on_result=results.append)
        assert notifier.event("sender", "block", {"ip": "192.0.2.7", "reason": "dha 10 in 60s",
                                                  "until": "2026-01-01T00:00:00Z", "action": "reject"})
        assert not notifier.event("sender", "unblock", {"ip": "192.0.2.7"}), "not configured: no mail"
        [note] = sink.wait_for(1, subject_contains="192.0.2.7")
        notifier.stop()
    finally:
        sink.stop()
    assert sorted(note.recipients) == ["admin@example.com", "soc@example.com"]
    assert note.sender == ""
    assert "imss-milter sender unblock 192.0.2.7" in note.message.get_content()
    assert note.message["From"] == "gateway@example.com"
    assert results == ["sent"]


def relay_down(retry_interval: str, max_attempts: int):
    """(port where no relay listens yet, notifications settings that send there)."""
    port = free_port()
    return port, parse_notifications(section(f"""\
notifications:
  smtp: "127.0.0.1:{port}"
  admins: [admin@example.com]
  retry_interval: {retry_interval}
  max_attempts: {max_attempts}
"""))


def wait_for_retries(results: list, count: int) -> None:
    deadline = time.monotonic() + 10
    while results.count("retry") < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert results.count("retry") >= count, "nothing listens yet: every first attempt fails"


@needs_sink
def test_a_relay_that_is_down_is_retried_until_it_answers(sink_root):
    port, settings = relay_down("0.3s", 50)
    results = []
    notifier = Notifier(settings, on_result=results.append)
    notifier.notify(["admin"], "default", {"subject": "retry-check", "verdict": "quarantine"})
    wait_for_retries(results, 1)
    sink = SmtpSink(sink_root, port=port).start()
    try:
        found = sink.wait_for(1, timeout=15, subject_contains="retry-check")
        notifier.stop()
    finally:
        sink.stop()
    assert len(found) == 1 and results[-1] == "sent"


@needs_sink
def test_notifications_waiting_for_a_retry_survive_a_stop_and_are_sent_by_the_next_process(sink_root, tmp_path):
    """A worker that stops while the relay is down keeps its pending notifications in the spool
    (they were logged and dropped before); the next worker to start sends them, once."""
    port, settings = relay_down("1h", 5)
    spool = str(tmp_path / "notifications")
    results = []
    stopping = Notifier(settings, on_result=results.append, spool_dir=spool)
    for number in range(3):
        stopping.notify(["admin"], "default", {"subject": f"spooled-{number}", "verdict": "quarantine"})
    wait_for_retries(results, 3)
    assert results.count("retry") == 3
    stopping.stop()
    kept = sorted(os.listdir(spool))
    assert len(kept) == 3 and all(name.endswith(".json") for name in kept)
    (tmp_path / "notifications" / "0-garbage.json").write_text("{not json")

    sink = SmtpSink(sink_root, port=port).start()
    try:
        first, second = (Notifier(settings, spool_dir=spool) for _ in range(2))
        taken = [first.resume(), second.resume()]       # two workers starting: each file goes to one
        sink.wait_for(3, timeout=15, subject_contains="spooled-")
        first.stop()
        second.stop()
        time.sleep(0.5)                                 # a duplicate would have arrived by now
        subjects = [note.message["Subject"] for note in sink.messages()]
    finally:
        sink.stop()
    assert sum(taken) == 3
    for number in range(3):
        assert sum(f"spooled-{number}" in subject for subject in subjects) == 1, subjects
    assert len(subjects) == 3, subjects
    assert sorted(os.listdir(spool)) == ["0-garbage.json.bad"]


@needs_sink
def test_a_starting_daemon_sends_what_the_spool_holds(sink_root, tmp_path):
    """The daemon's workers resume the spool at start: a notification a stopped daemon left there
    reaches the relay without any new mail."""
    import json

    from tests.helpers.daemon import MilterDaemon

    sink = SmtpSink(sink_root).start()
    root = str(tmp_path / "daemon")
    os.makedirs(os.path.join(root, "state", "notifications"))
    with open(os.path.join(root, "state", "notifications", "1-1-0.json"), "w") as handle:
        json.dump({"recipients": ["admin@example.com"], "subject": "left-by-the-last-run",
                   "body": "held for release", "attempts": 1}, handle)
    daemon = MilterDaemon(root, workers=2, extra_config=f'notifications: {{smtp: "127.0.0.1:{sink.port}"}}\n')
    try:
        daemon.start()
        [note] = sink.wait_for(1, timeout=20, subject_contains="left-by-the-last-run")
    finally:
        daemon.stop()
        sink.stop()
    assert note.recipients == ["admin@example.com"]
    assert os.listdir(os.path.join(root, "state", "notifications")) == []
