"""A private Postfix instance on loopback, and Postfix's smtp-sink as the next hop that captures mail.

Used by the end-to-end tests and the benchmark. Everything lives under one
temporary directory; the instance listens on 127.0.0.1 only, relays every
message to the sink, and has a second smtpd port without milters (the
reinjection service that quarantine release uses, as contrib/postfix shows).
"""

from __future__ import annotations

import email
import email.policy
import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .net import free_port, wait_for_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

MASTER_CF = """\
{smtp_addr} inet n - n - - smtpd
{reinject_addr} inet n - n - - smtpd
  -o smtpd_milters=
  -o receive_override_options=no_milters
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1, dumping every received transaction to a file."""

    def __init__(self, root: str, port: int | None = None):
        self.root = root
        self.dump_dir = os.path.join(root, "sink")
        os.makedirs(self.dump_dir, exist_ok=True)
        os.chmod(self.dump_dir, 0o777)
        self.port = port or free_port()
        self.proc = None

    def start(self, dump: bool = True) -> "SmtpSink":
        cmd = [SMTP_SINK, "-u", "nobody"]
        if dump:
            cmd += ["-d", os.path.join(self.dump_dir, "msg.")]
        cmd += [f"127.0.0.1:{self.port}", "256"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def messages(self) -> list["Captured"]:
        result = []
        for path in sorted(glob.glob(os.path.join(self.dump_dir, "msg.*"))):
            with open(path, "rb") as handle:
                result.append(Captured.parse(handle.read()))
        return [m for m in result if m is not None]

    def wait_for(self, count: int, timeout: float = 30.0, **match) -> list["Captured"]:
        """Wait until at least count captured messages satisfy match (e.g. subject_contains=...)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages() if m.matches(**match)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@dataclass
class Captured:
    """One transaction as dumped by smtp-sink: envelope lines, then the message."""

    sender: str
    recipients: list[str]
    raw: bytes

    @classmethod
    def parse(cls, dump: bytes):
        # Dump format: "X-Client-Addr: ..", "X-Client-Proto: ..", "X-Helo-Args: ..",
        # "X-Mail-Args: <sender> ...", "X-Rcpt-Args: <rcpt> ..." (one per RCPT), then the message.
        sender, recipients = None, []
        lines = dump.split(b"\n")
        index = 0
        while index < len(lines):
            line = lines[index].rstrip(b"\r")
            if line.startswith(b"X-Mail-Args:"):
                sender = line.split(b":", 1)[1].strip().split(b" ")[0].decode().strip("<>")
            elif line.startswith(b"X-Rcpt-Args:"):
                recipients.append(line.split(b":", 1)[1].strip().split(b" ")[0].decode().strip("<>"))
            elif line.startswith(b"X-Client-") or line.startswith(b"X-Helo-Args:"):
                pass
            else:
                break
            index += 1
        if sender is None:
            return None
        return cls(sender=sender, recipients=recipients, raw=b"\n".join(lines[index:]))

    @property
    def message(self):
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def matches(self, subject_contains: str | None = None, header: tuple | None = None) -> bool:
        msg = self.message
        if subject_contains is not None and subject_contains not in str(msg.get("Subject", "")):
            return False
        if header is not None and header[1] not in [str(v) for v in msg.get_all(header[0], [])]:
            return False
        return True


class PostfixInstance:
    """A private Postfix on 127.0.0.1 relaying everything to relay_port, optionally with a milter."""

    def __init__(self, root: str, relay_port: int, milter: str | None = None,
                 extra_main_cf: dict | None = None):
        self.root = root
        self.config_dir = os.path.join(root, "postfix-etc")
        self.queue_dir = os.path.join(root, "postfix-spool")
        self.data_dir = os.path.join(root, "postfix-data")
        self.maillog = os.path.join(root, "maillog")
        self.smtp_port = free_port()
        self.reinject_port = free_port()
        self.relay_port = relay_port
        self.milter = milter
        self.extra_main_cf = extra_main_cf or {}

    def main_cf(self) -> dict:
        conf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.imss-test.example",
            "mydomain": "imss-test.example",
            "mydestination": "",
            "local_transport": "error:no local delivery",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.root,
            "syslog_name": f"postfix-imss-test-{self.smtp_port}",
            "smtputf8_enable": "no",
            "message_size_limit": str(60 * 1024 * 1024),
            "smtpd_milters": self.milter or "",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
            "milter_connect_timeout": "10s",
            "milter_command_timeout": "30s",
            "milter_content_timeout": "60s",
            "in_flow_delay": "0",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "default_process_limit": "200",
            "smtp_destination_concurrency_limit": "100",
            "default_destination_concurrency_limit": "100",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
        }
        conf.update(self.extra_main_cf)
        return conf

    def postfix(self, *args, check=True) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", self.config_dir, *args], capture_output=True, text=True,
                              check=check, timeout=60)

    def start(self) -> "PostfixInstance":
        os.makedirs(self.config_dir, exist_ok=True)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as handle:
            for key, value in self.main_cf().items():
                handle.write(f"{key} = {value}\n")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as handle:
            handle.write(MASTER_CF.format(smtp_addr=f"127.0.0.1:{self.smtp_port}",
                                          reinject_addr=f"127.0.0.1:{self.reinject_port}"))
        for path in (self.queue_dir, self.data_dir):
            os.makedirs(path, exist_ok=True)
        shutil.chown(self.data_dir, "postfix")
        open(self.maillog, "a").close()
        result = self.postfix("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}\n{self.log()}")
        wait_for_port(self.smtp_port)
        wait_for_port(self.reinject_port)
        return self

    def stop(self) -> None:
        self.postfix("stop", check=False)
        # postfix stop returns before every daemon is gone; wait for the master pid file to vanish
        pid_file = os.path.join(self.queue_dir, "pid", "master.pid")
        deadline = time.monotonic() + 15
        while os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.exists(pid_file):
            self.postfix("abort", check=False)

    def reload(self) -> None:
        self.postfix("reload")

    def set_milter(self, milter: str | None) -> None:
        subprocess.run(["postconf", "-c", self.config_dir, f"smtpd_milters={milter or ''}"], check=True)
        self.reload()

    def log(self) -> str:
        try:
            with open(self.maillog, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def queue_ids_in_log(self) -> list[str]:
        return [line for line in self.log().splitlines() if "milter" in line]

    def flush(self) -> None:
        self.postfix("flush", check=False)
