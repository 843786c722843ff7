"""The daemon's own update schedule (updates.schedule): a master thread that runs `imss-milter update`
every interval plus a random delay, so a fleet of gateways does not hit the source at the same second.

The update runs as a child process: it downloads and compiles in its own
memory, and the master (which forks workers) holds no lock a download left
taken. The switch it makes is picked up like any other (Master polls current/).
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading

log = logging.getLogger("imss_milter")

UPDATE_TIMEOUT = 3600.0


def next_delay(schedule, rand=random.random) -> float:
    """Seconds until the next run: the interval plus a uniform share of random_delay."""
    return schedule.interval + rand() * schedule.random_delay


def update_command(config_path: str | None) -> list[str]:
    command = [sys.executable, "-m", "imss_milter.cli"]
    if config_path:
        command += ["--config", config_path]
    return command + ["update"]


def run_update_process(config_path: str | None) -> int:
    """One scheduled run; its output goes to our log, a failure never stops the daemon."""
    try:
        done = subprocess.run(update_command(config_path), capture_output=True, text=True,
                              timeout=UPDATE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("scheduled pattern update could not run: %s", exc)
        return 1
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            (log.info if done.returncode == 0 else log.error)("scheduled update: %s", line)
    return done.returncode


class UpdateScheduler:
    """Runs job() after next_delay(), again and again, until stop()."""

    def __init__(self, schedule, job, rand=random.random):
        self.schedule = schedule
        self.job = job
        self.rand = rand
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="imss-update-schedule", daemon=True)

    def start(self) -> "UpdateScheduler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(next_delay(self.schedule, self.rand)):
            try:
                self.job()
            except Exception as exc:   # noqa: BLE001 - the schedule must survive a failed run
                log.error("scheduled pattern update failed: %s", exc)
