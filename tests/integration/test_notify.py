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


@needs_sink
def test_a_relay_that_is_down_is_retried_until_it_answers(sink_root):
    port = free_port()
    settings = parse_notifications(section(f"""\
notifications:
  smtp: "127.0.0.1:{port}"
  admins: [admin@example.com]
  retry_interval: 0.3s
  max_attempts: 50
"""))
    results = []
    notifier = Notifier(settings, on_result=results.append)
    notifier.notify(["admin"], "default", {"subject": "retry-check", "verdict": "quarantine"})
    deadline = time.monotonic() + 10
    while "retry" not in results and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "retry" in results, "the first attempt fails: nothing listens yet"
    sink = SmtpSink(sink_root, port=port).start()
    try:
        found = sink.wait_for(1, timeout=15, subject_contains="retry-check")
        notifier.stop()
    finally:
        sink.stop()
    assert len(found) == 1 and results[-1] == "sent"
