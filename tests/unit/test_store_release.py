"""Release against a real SMTP server on loopback (Postfix's smtp-sink dumps each transaction with its envelope)."""

import argparse
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

from imss_milter.commands import quarantine as quarantine_command
from imss_milter.errors import StoreError
from imss_milter.policy.types import Envelope
from imss_milter.store import Store

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
pytestmark = pytest.mark.skipif(not os.path.exists(SMTP_SINK),
                                reason="needs Postfix's smtp-sink (Debian package postfix)")

RAW = (b"From: alice@example.org\nTo: bob@example.com\nSubject: held invoice\n\n"
       b"line one\n.leading dot\n8-bit: caf\xc3\xa9\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_banner(port: int, process: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(64).startswith(b"220"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


class SmtpSink:
    """smtp-sink on 127.0.0.1 writing one dump file per transaction into a directory."""

    def __init__(self, extra_args=()):
        # As root, smtp-sink must drop to another user (-u nobody), who cannot
        # enter pytest's private tmp_path: dump into a world-reachable directory.
        self.directory = tempfile.mkdtemp(prefix="imss-sink-")
        os.chmod(self.directory, 0o777)
        self.log_path = os.path.join(self.directory, "sink.log")
        self.extra_args = list(extra_args)
        self.process = None
        self.port = None

    def start(self):
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        for _ in range(5):                     # another process may grab the probed port first
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [SMTP_SINK, *user, "-d", os.path.join(self.directory, "mail."), *self.extra_args,
                     f"127.0.0.1:{self.port}", "10"],
                    stdout=subprocess.DEVNULL, stderr=log)
            if wait_for_banner(self.port, self.process, time.monotonic() + 10):
                return self
            self.stop()
        with open(self.log_path, "rb") as log:
            raise RuntimeError(f"smtp-sink did not start: {log.read().decode(errors='replace')}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def remove(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def dumps(self, count=1, timeout=10) -> list[bytes]:
        """The dumped transactions, once `count` are complete (a dump ends with the empty line)."""
        deadline = time.monotonic() + timeout
        while True:
            contents = []
            for path in sorted(glob.glob(os.path.join(self.directory, "mail.*"))):
                with open(path, "rb") as handle:
                    contents.append(handle.read())
            if len(contents) >= count and all(c.endswith(b"\n\n") for c in contents):
                return contents
            if time.monotonic() > deadline:
                return contents
            time.sleep(0.05)


def envelope_of(dump: bytes) -> tuple[str, list[str]]:
    header = dump.split(b"\n\n", 1)[0].decode("utf-8", "replace").split("\n")
    mail = [line.split(": ", 1)[1] for line in header if line.startswith("X-Mail-Args: ")]
    rcpts = [line.split(": ", 1)[1] for line in header if line.startswith("X-Rcpt-Args: ")]
    return mail[0].split()[0], [r.split()[0] for r in rcpts]


@pytest.fixture
def sink():
    running = SmtpSink().start()
    yield running
    running.remove()


@pytest.fixture
def store(tmp_path):
    with Store(str(tmp_path / "state")) as opened:
        yield opened


def hold(store, sender="alice@example.org", recipients=("bob@example.com", "carol@example.com")):
    envelope = Envelope(sender=sender, recipients=list(recipients), queue_id="5D2F1")
    return store.quarantine("default", RAW, envelope, "held invoice", ["block-executables"])


def test_release_reinjects_with_original_envelope(store, sink):
    qid = hold(store)
    assert store.release(qid, "127.0.0.1", sink.port) == {}
    (dump,) = sink.dumps()
    assert envelope_of(dump) == ("<alice@example.org>", ["<bob@example.com>", "<carol@example.com>"])
    assert b"Subject: held invoice\n" in dump
    assert b"\n.leading dot\n" in dump                       # dot-stuffing undone by the server
    assert "caf\u00e9".encode() in dump
    assert b"BODY=8BITMIME" in dump                          # 8-bit body announced
    released = store.get(qid)
    assert released["released"] is not None                  # kept, marked released
    assert released["released_to"] == ["bob@example.com", "carol@example.com"]
    events = [e for e in store.query_logs(kind="events") if e["event"] == "released"]
    assert events and events[0]["queue_id"] == "5D2F1" and events[0]["detail"]["id"] == qid


def test_release_of_null_sender_message(store, sink):
    qid = hold(store, sender="", recipients=["postmaster@example.com"])
    store.release(qid, "127.0.0.1", sink.port)
    (dump,) = sink.dumps()
    assert envelope_of(dump) == ("<>", ["<postmaster@example.com>"])


def test_release_to_other_recipients(store, sink):
    qid = hold(store)
    store.release(qid, "127.0.0.1", sink.port, recipients=["admin@example.com"])
    (dump,) = sink.dumps()
    assert envelope_of(dump) == ("<alice@example.org>", ["<admin@example.com>"])


def test_release_to_closed_port_is_a_clear_error(store):
    qid = hold(store)
    port = free_port()
    with pytest.raises(StoreError, match=rf"release via 127.0.0.1:{port} failed: .*[Cc]onnection refused"):
        store.release(qid, "127.0.0.1", port)
    assert store.get(qid)["released"] is None                # still held, not marked


def test_release_refused_by_server_carries_its_reply(store):
    refusing = SmtpSink(["-f", "RCPT"]).start()
    try:
        qid = hold(store)
        with pytest.raises(StoreError, match=r"refused every recipient: bob@example.com: 5\d\d "):
            store.release(qid, "127.0.0.1", refusing.port)
    finally:
        refusing.remove()
    assert store.get(qid)["released"] is None


def test_release_unknown_id(store):
    with pytest.raises(StoreError, match="no quarantined message with id 20260101T000000-"):
        store.release("20260101T000000-" + "a" * 24, "127.0.0.1", 25)


# --- the command, end to end through the store ----------------------------------------

@dataclass
class FakeSettings:
    state_dir: str
    release_smtp: tuple
    quarantine_areas: dict = field(default_factory=dict)
    archive_areas: dict = field(default_factory=dict)


def release_args(qid, to=None):
    return argparse.Namespace(id=qid, to=to)


def test_release_command_reports_delivery(store, sink, capsys):
    qid = hold(store)
    settings = FakeSettings(store.state_dir, ("127.0.0.1", sink.port))
    assert quarantine_command.cmd_release(release_args(qid), settings) == 0
    out = capsys.readouterr().out
    assert f"released {qid}" in out and "bob@example.com, carol@example.com" in out
    (dump,) = sink.dumps()
    assert envelope_of(dump)[1] == ["<bob@example.com>", "<carol@example.com>"]


def test_release_command_failure_exits_1_with_reason(store, capsys):
    qid = hold(store)
    settings = FakeSettings(store.state_dir, ("127.0.0.1", free_port()))
    assert quarantine_command.cmd_release(release_args(qid), settings) == 1
    err = capsys.readouterr().err
    assert f"could not release {qid}" in err and "onnection refused" in err


def test_release_command_unknown_id(store, capsys):
    settings = FakeSettings(store.state_dir, ("127.0.0.1", 25))
    assert quarantine_command.cmd_release(release_args("bogus"), settings) == 1
    assert "no quarantined message with id bogus" in capsys.readouterr().err
