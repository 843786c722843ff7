"""Run a private clamd (Debian's clamav-daemon binary) in the foreground on a unix socket in a temp dir.

The test gives the signature databases (file name -> text); nothing comes
from freshclam or the internet. start() waits for the socket and a
PING/PONG, so a test never races clamd's database load.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from .net import stop_process

CLAMD = "/usr/sbin/clamd"
# The EICAR anti-malware test file, in two halves so no file of the repository is itself one.
EICAR_HEAD = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$"
EICAR_TAIL = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def eicar() -> bytes:
    return (EICAR_HEAD + EICAR_TAIL).encode("ascii")


def clamd_available() -> bool:
    return os.access(CLAMD, os.X_OK)


def ping(path: str, timeout: float = 1.0) -> bool:
    """True when the clamd on the unix socket path answers zPING with PONG."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"zPING\0")
            reply = b""
            while not reply.endswith(b"\0"):
                data = sock.recv(64)
                if not data:
                    break
                reply += data
            return reply.rstrip(b"\0").strip() == b"PONG"
    except OSError:
        return False


class Clamd:
    """databases: {"test.hdb": "md5:size:Name\\n", "test.ndb": "Name:0:*:hex\\n"}; extra: more clamd.conf lines."""

    def __init__(self, databases: dict[str, str], extra_config: str = ""):
        self.databases = databases
        self.extra_config = extra_config
        # clamd may drop to the configured User: keep the tree readable, not pytest's 0700 tmp dirs
        self.directory = tempfile.mkdtemp(prefix="imss-clamd-")
        os.chmod(self.directory, 0o755)
        self.database_dir = os.path.join(self.directory, "db")
        self.socket_path = os.path.join(self.directory, "clamd.sock")
        self.config_path = os.path.join(self.directory, "clamd.conf")
        self.log_path = os.path.join(self.directory, "clamd.log")
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    def write_config(self) -> None:
        os.makedirs(self.database_dir, exist_ok=True)
        for name, text in self.databases.items():
            with open(os.path.join(self.database_dir, name), "w") as handle:
                handle.write(text)
        user = "root" if os.geteuid() == 0 else None
        lines = [
            f"LocalSocket {self.socket_path}",
            "LocalSocketMode 666",
            "Foreground yes",
            f"DatabaseDirectory {self.database_dir}",
            f"TemporaryDirectory {self.directory}",
            f"LogFile {self.log_path}",
            "LogTime yes",
            "Bytecode no",
            "OfficialDatabaseOnly no",
            "DetectPUA yes",          # so PUA.* test signatures load (clamd skips them by default)
            "MaxThreads 4",
            "IdleTimeout 30",
        ]
        if user:
            lines.append(f"User {user}")
        with open(self.config_path, "w") as handle:
            handle.write("\n".join(lines) + "\n" + self.extra_config)

    def start(self, timeout: float = 60.0) -> "Clamd":
        self.write_config()
        self.proc = subprocess.Popen([CLAMD, "--foreground", f"--config-file={self.config_path}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.proc.returncode}: {self.output()}")
            if os.path.exists(self.socket_path) and ping(self.socket_path):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"clamd did not answer PING within {timeout}s: {self.output()}")

    def output(self) -> str:
        text = ""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stdout:
            text += self.proc.stdout.read().decode(errors="replace")
        try:
            with open(self.log_path, errors="replace") as handle:
                text += handle.read()
        except OSError:
            pass
        return text[-4000:]

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Clamd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
