"""Run the real `imss-milter run` daemon for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

from .net import wait_for_port, wait_for_unix_socket

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_RULES = os.path.join(REPO, "rules")


def imss_command() -> list[str]:
    """The installed console script next to this Python, else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "imss-milter")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "imss_milter.cli"]


def run_cli(config: str, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*imss_command(), "--config", config, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


class MilterDaemon:
    """imss-milter with its own config, rules dir, state dir and unix socket under root."""

    def __init__(self, root: str, rules: dict[str, str] | None = None, shipped_rules: bool = True,
                 release_port: int = 10026, workers: int = 2, extra_config: str = "",
                 internal_domains=("example.com",), max_message_size: str = "1MB",
                 socket_spec: str | None = None, metrics_listen: str = ""):
        self.root = root
        self.rules_dir = os.path.join(root, "rules")
        self.state_dir = os.path.join(root, "state")
        # like /run/imss-milter: a directory the daemon creates and owns, for the socket and pid file
        self.socket = os.path.join(root, "run", "milter.sock")
        self.socket_spec = socket_spec or f"unix:{self.socket}"
        self.pid_file = os.path.join(root, "run", "imss-milter.pid")
        self.config = os.path.join(root, "imss-milter.yaml")
        self.log_path = os.path.join(root, "imss-milter.log")
        self.proc = None
        self.metrics_listen = metrics_listen       # "127.0.0.1:PORT" serves /metrics; "" switches it off
        os.makedirs(self.rules_dir, exist_ok=True)
        if shipped_rules:
            for name in os.listdir(SHIPPED_RULES):
                if name.endswith(".yaml"):
                    shutil.copy(os.path.join(SHIPPED_RULES, name), self.rules_dir)
        for name, text in (rules or {}).items():
            self.write_rule(name, text)
        domains = ", ".join(internal_domains)
        with open(self.config, "w") as handle:
            handle.write(textwrap.dedent(f"""\
                milter:
                  socket: "{self.socket_spec}"
                  socket_mode: "0666"
                  user: ""
                  workers: {workers}
                  pid_file: {self.pid_file}
                  max_message_size: {max_message_size}
                  timeout: 30
                internal_domains: [{domains}]
                rules_dir: {self.rules_dir}
                state_dir: {self.state_dir}
                metrics: {{listen: "{metrics_listen}"}}
                release: {{smtp: "127.0.0.1:{release_port}"}}
                logging: {{target: stderr, level: info}}
                """) + extra_config)

    @property
    def milter_spec(self) -> str:
        """The same socket as Postfix writes it in smtpd_milters."""
        if self.socket_spec.startswith("inet:"):
            port, _, host = self.socket_spec[5:].partition("@")
            return f"inet:{host or '127.0.0.1'}:{port}"
        return self.socket_spec

    def write_rule(self, name: str, text: str) -> None:
        with open(os.path.join(self.rules_dir, name), "w") as handle:
            handle.write(textwrap.dedent(text))

    def start(self) -> "MilterDaemon":
        self.log_handle = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*imss_command(), "--config", self.config, "run"],
                                     stdout=self.log_handle, stderr=subprocess.STDOUT)
        try:
            if self.socket_spec.startswith("inet:"):
                port, _, host = self.socket_spec[5:].partition("@")
                wait_for_port(int(port), host or "127.0.0.1", timeout=30, proc=self.proc)
            else:
                wait_for_unix_socket(self.socket, timeout=30, proc=self.proc)
            if self.metrics_listen:
                host, _, port = self.metrics_listen.rpartition(":")
                wait_for_port(int(port), host, timeout=30, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- daemon log ---\n{self.log()}") from None
        return self

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return run_cli(self.config, *args, check=check)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_handle.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""
