"""The daemon behaves like a Unix service: drops root, uses its worker processes, stops gracefully."""

from __future__ import annotations

import os
import pwd
import smtplib
import subprocess
import time

import pytest

from tests.e2e.test_postfix_verdicts import make_message
from tests.helpers.daemon import MilterDaemon, run_cli
from tests.helpers.net import free_port
from tests.helpers.stack import e2e_root, mail_stack


pytestmark = pytest.mark.e2e


def proc_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


@pytest.fixture
def stack():
    if os.geteuid() != 0:
        pytest.skip("privilege drop needs root")
    root = e2e_root("imss-life-")

    def make_daemon(postfix):
        daemon = MilterDaemon(root, release_port=postfix.reinject_port, workers=2,
                              metrics_listen=f"127.0.0.1:{free_port()}")
        with open(daemon.config) as handle:
            text = handle.read().replace('user: ""', "user: nobody")
        with open(daemon.config, "w") as handle:
            handle.write(text)
        return daemon
    with mail_stack(root, make_daemon) as parts:
        yield parts


def test_drops_privileges_and_runs_one_worker_per_setting(stack):
    _, _, daemon = stack
    nobody = pwd.getpwnam("nobody").pw_uid
    assert proc_uid(daemon.proc.pid) == nobody
    workers = children(daemon.proc.pid)
    assert len(workers) == 2
    assert all(proc_uid(pid) == nobody for pid in workers)
    assert os.stat(daemon.socket).st_uid == nobody
    assert os.stat(daemon.state_dir).st_uid == nobody
    assert os.stat(daemon.root).st_uid == 0, "an existing directory is not handed to the service user"


def test_sigterm_finishes_the_message_in_flight(stack):
    sink, postfix, daemon = stack
    client = smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60)
    try:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@example.com")
        code, _ = client.docmd("DATA")
        assert code == 354
        client.send(make_message("in flight e2e-sigterm").replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"))
        daemon.proc.terminate()                   # SIGTERM while the message is open
        time.sleep(1.0)
        assert daemon.proc.poll() is None, "the daemon waits for the connection in flight"
        client.send(b"\r\n.\r\n")
        code, reply = client.getreply()
        assert code == 250, reply
    finally:
        client.close()
    [captured] = sink.wait_for(1, subject_contains="e2e-sigterm")
    assert captured.recipients == ["bob@example.com"]
    try:
        daemon.proc.wait(40)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon did not exit after its last connection closed\n" + daemon.log())
    assert daemon.proc.returncode == 0, daemon.log()
    assert not os.path.exists(daemon.pid_file)
    assert not os.path.exists(daemon.socket)


def test_check_config_and_bad_main_config_report_file_and_line(tmp_path):
    config = tmp_path / "imss-milter.yaml"
    config.write_text("milter:\n  on_error: maybe\n")
    result = run_cli(str(config), "check-config")
    assert result.returncode == 1
    assert f"{config}:2: milter.on_error: expected tempfail or accept" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_zipped_executable_is_quarantined_after_privileges_are_dropped(stack):
    """Scanning as the service user must work: codecs and modules Python loads lazily (cp437 for zip
    names) are preloaded before setuid, since the interpreter may live in a directory the user cannot read."""
    import io
    import json
    import zipfile

    from tests.e2e.test_postfix_verdicts import pe_executable

    sink, postfix, daemon = stack
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("report.exe", pe_executable())
    raw = make_message("zipped e2e-dropped", attachment=("report.zip", buffer.getvalue(), "application", "zip"))
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.sendmail("alice@example.org", ["bob@example.com"], raw)
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-dropped") == []
    listing = json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)
    [entry] = [e for e in listing if "e2e-dropped" in e["subject"]]
    assert entry["rules"][0] == "block-executables"


def test_metrics_are_served_by_a_daemon_running_as_nobody(stack):
    """Everything imported late (prometheus-client's HTTP server, our own modules) is loaded before setuid."""
    import urllib.request
    sink, postfix, daemon = stack
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.sendmail("alice@example.org", ["bob@example.com"], make_message("metrics e2e-nobody"))
    assert sink.wait_for(1, subject_contains="e2e-nobody")
    url = f"http://{daemon.metrics_listen}/metrics"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if 'imss_messages_total{direction="inbound",verdict="deliver"}' in text:
            break
        time.sleep(0.3)
    assert 'imss_messages_total{direction="inbound",verdict="deliver"}' in text
    assert "Traceback" not in daemon.log() and "No module named" not in daemon.log()


def test_every_worker_stops_promptly_after_connections_woke_them_all(tmp_path):
    """The workers share one listening socket and a connection wakes them all; those that lose the
    race must not sit in accept() holding libmilter's listener lock, or SIGTERM never stops them
    (a worker outlived its master this way). Connections, then SIGTERM: master and workers are gone
    well before the 15 s a stuck listener is given."""
    import socket

    daemon = MilterDaemon(str(tmp_path / "d"), workers=2).start()
    try:
        deadline = time.monotonic() + 10
        while len(children(daemon.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(daemon.proc.pid)
        assert len(workers) == 2
        time.sleep(0.5)              # both in libmilter's loop
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(daemon.socket)
            time.sleep(0.3)          # every worker's poll() sees it; one accept()s
        started = time.monotonic()
        daemon.proc.terminate()
        try:
            daemon.proc.wait(12)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not stop within 12 s of SIGTERM\n" + daemon.log())
        assert time.monotonic() - started < 12
        assert [pid for pid in workers if os.path.exists(f"/proc/{pid}")
                and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"] == []
        assert "did not return" not in daemon.log()
        assert daemon.proc.returncode == 0, daemon.log()
    finally:
        daemon.stop()
