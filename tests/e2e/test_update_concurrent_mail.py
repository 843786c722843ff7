"""End to end: mail keeps flowing through Postfix and the daemon while `imss-milter update` installs a bad
(but loadable) DLP pattern set and `imss-milter rollback` takes it back; no message is lost or
tempfailed, the bad set takes effect without a restart, and the rollback undoes it."""

from __future__ import annotations

import json
import os
import smtplib
import threading
import time
import uuid
from email.message import EmailMessage

import pytest

from tests.helpers.daemon import MilterDaemon, run_cli
from tests.helpers.stack import e2e_root, mail_stack
from tests.integration.updates_support import (PROJECT_GOOD, PROJECT_MATCHES_CLEAN_MAIL, PROJECT_RULE,
                                               make_bundle)

pytestmark = pytest.mark.e2e

MIN_BACKGROUND = 40          # messages sent while the update and the rollback happen
MAX_BACKGROUND = 400         # the loop is bounded even if the foreground steps are slow
WORKERS = 2


def message(subject: str, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@partner.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.com>"
    msg.set_content(text)
    return msg.as_bytes()


def send(postfix, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.sendmail("alice@example.com", ["bob@partner.test"], raw)


def wait_for_reload(daemon, before: int, timeout: float = 60.0) -> None:
    """The master and every worker log one "rules reloaded" line per reload."""
    deadline = time.monotonic() + timeout
    while daemon.log().count("rules reloaded") < before + 1 + WORKERS:
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon did not reload\n--- daemon log ---\n{daemon.log()}")
        time.sleep(0.1)


def quarantined(daemon, subject: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)
        if any(subject in entry["subject"] for entry in listing):
            return True
        time.sleep(0.2)
    return False


class BackgroundMail(threading.Thread):
    """Sends clean mail one connection at a time until told to stop (at least MIN_BACKGROUND)."""

    def __init__(self, postfix, tag: str):
        super().__init__(daemon=True)
        self.postfix = postfix
        self.tag = tag
        self.sent: list[str] = []
        self.errors: list[str] = []
        self.enough = threading.Event()

    def run(self) -> None:
        for index in range(MAX_BACKGROUND):
            if self.enough.is_set() and len(self.sent) >= MIN_BACKGROUND:
                return
            subject = f"{self.tag}-{index:03d}"
            try:
                send(self.postfix, message(subject, "Quarterly figures attached.\nRegards, Alice\n"))
                self.sent.append(subject)
            except (smtplib.SMTPException, OSError) as exc:
                self.errors.append(f"{subject}: {exc!r}")


@pytest.fixture
def stack():
    root = e2e_root("imss-e2e-update-")
    bundle = os.path.join(root, "bundle")
    make_bundle(root, "bundle", "1", PROJECT_GOOD, out=bundle)

    def make_daemon(postfix):
        daemon = MilterDaemon(root, rules={"50-project.yaml": PROJECT_RULE}, shipped_rules=False,
                              release_port=postfix.reinject_port, workers=WORKERS,
                              extra_config=f"patterns_dir: {root}/patterns\n")
        # the rules use a template only the published set has: install it before the daemon starts
        done = run_cli(daemon.config, "update", "--source", bundle)
        assert done.returncode == 0 and "dlp: installed 1" in done.stdout, done.stdout + done.stderr
        return daemon
    with mail_stack(root, make_daemon) as parts:
        yield (*parts, root, bundle)


def test_update_and_rollback_under_load_lose_no_mail(stack):
    sink, postfix, daemon, root, bundle = stack
    send(postfix, message("greeting-before", "hello Bob, lunch on Friday?\n"))
    assert len(sink.wait_for(1, subject_contains="greeting-before")) == 1

    make_bundle(root, "bundle", "2", PROJECT_MATCHES_CLEAN_MAIL, out=bundle)
    background = BackgroundMail(postfix, "flow-" + uuid.uuid4().hex[:8])
    background.start()
    try:
        reloads = daemon.log().count("rules reloaded")
        update = daemon.cli("update", "--source", bundle)
        assert update.returncode == 0 and "dlp: installed 2 (was 1)" in update.stdout, update.stdout + update.stderr
        wait_for_reload(daemon, reloads)
        send(postfix, message("greeting-bad-set", "hello Bob, lunch on Friday?\n"))
        assert quarantined(daemon, "greeting-bad-set"), daemon.log()

        reloads = daemon.log().count("rules reloaded")
        back = daemon.cli("rollback", "--component", "dlp")
        assert back.returncode == 0 and "dlp: rolled-back 1 (was 2)" in back.stdout, back.stdout + back.stderr
        wait_for_reload(daemon, reloads)
        send(postfix, message("greeting-after", "hello Bob, lunch on Friday?\n"))
        assert len(sink.wait_for(1, subject_contains="greeting-after")) == 1
    finally:
        background.enough.set()
        background.join(timeout=600)

    assert background.errors == []
    assert len(background.sent) >= MIN_BACKGROUND
    delivered = {m.message["Subject"] for m in sink.wait_for(len(background.sent), subject_contains=background.tag)}
    assert delivered == set(background.sent)
    assert not any("greeting-bad-set" in (m.message["Subject"] or "") for m in sink.messages())

    status = json.loads(daemon.cli("update", "status", "--json", check=True).stdout)
    [dlp] = [row for row in status if row["component"] == "dlp"]
    assert dlp["version"] == "1" and dlp["rolled_back"] == ["2"]
    events = json.loads(daemon.cli("logs", "--events", "--category", "system", "--json", check=True).stdout)
    names = [event.get("event") for event in events]
    assert {"pattern-update", "pattern-rollback", "patterns-changed"} <= set(names)
    assert "tempfail" not in {r.get("verdict") for r in json.loads(daemon.cli("logs", "--json").stdout)}
