"""Run a private rbldnsd on 127.0.0.1 for DNSBL tests, and a UDP "nameserver" that never answers.

rbldnsd serves test zones from data files written here; its query log
(-l +file, unbuffered) lets tests count the queries it really received.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import dns.message
import dns.query
import dns.rcode

from .net import stop_process


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Rbldnsd:
    """zones: {zone name: (dataset type, data text)}, e.g. {"bl.test": ("ip4set", ":127.0.0.2:Listed\\n192.0.2.1\\n")}."""

    def __init__(self, zones: dict[str, tuple[str, str]], ttl: int = 300):
        self.zones = zones
        self.ttl = ttl
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        # rbldnsd drops root for its own user, which must read the data: not under pytest's 0700 tmp dirs
        self.directory = tempfile.mkdtemp(prefix="imss-rbldnsd-")
        os.chmod(self.directory, 0o755)
        self.log_path = os.path.join(self.directory, "queries.log")

    def start(self, timeout: float = 15.0) -> "Rbldnsd":
        binary = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"
        specs = []
        for index, (zone, (dataset, text)) in enumerate(self.zones.items()):
            path = os.path.join(self.directory, f"zone{index}.txt")
            with open(path, "w") as handle:
                handle.write(text)
            os.chmod(path, 0o644)
            specs.append(f"{zone}:{dataset}:{path}")
        with open(self.log_path, "w"):
            pass
        os.chmod(self.log_path, 0o666)
        command = [binary, "-n", "-b", None, "-t", str(self.ttl), "-l", "+" + self.log_path]
        if os.geteuid() == 0:
            command += ["-u", "rbldns"]
        for attempt in range(5):     # the free port may be taken between probing and binding
            self.port = free_udp_port()
            command[3] = f"{self.host}/{self.port}"
            self.proc = subprocess.Popen(command + specs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                if attempt == 4:
                    raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = dns.message.make_query("version.bind.", "TXT", "CH")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError(f"rbldnsd exited with {self.proc.returncode}: {output}")
            try:
                dns.query.udp(probe, self.host, port=self.port, timeout=0.3)
                return
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"rbldnsd did not answer on {self.host}:{self.port} within {timeout}s")

    def query_log(self) -> list[str]:
        with open(self.log_path, errors="replace") as handle:
            return handle.read().splitlines()

    def queries_for(self, name: str) -> int:
        """How many logged queries asked for exactly this name (case-insensitive, with or without the final dot)."""
        wanted = name.lower().rstrip(".")
        return sum(1 for line in self.query_log() if wanted in (w.lower().rstrip(".") for w in line.split()))

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class BlackholeDns:
    """A UDP socket on loopback that reads queries and never answers: a DNSBL that is dead."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(4096)
                self.received += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
