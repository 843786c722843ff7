"""Run a private redis-server on 127.0.0.1 (no persistence) for shared-state tests; stop and start it again."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

from .net import free_port, wait_for_port, stop_process


class RedisServer:
    def __init__(self):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="imss-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--dir", self.directory, "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.host, timeout=timeout, proc=self.proc)
        self._wait_ping(timeout)
        return self

    def _wait_ping(self, timeout: float) -> None:
        import redis

        client = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
