"""Tracking records and log lines on the cheap path: records reach the store while the writer runs
(batched, without a wake-up per message), and the per-second time stamp is the one logging writes."""

from __future__ import annotations

import logging
import textwrap
import time

import pytest

from imss_milter.logsetup import SecondCachedFormatter
from imss_milter.milter import ImssMilter
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.milterctx import run_message


@pytest.fixture
def runtime(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    config = tmp_path / "imss-milter.yaml"
    config.write_text(textwrap.dedent(f"""\
        milter: {{user: ""}}
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        state_dir: {tmp_path / 'state'}
        """))
    rt = Runtime(load_settings(str(config)))
    previous = ImssMilter.runtime
    ImssMilter.runtime = rt
    yield rt
    ImssMilter.runtime = previous


MESSAGE = b"From: a@example.org\r\nTo: user@example.com\r\nSubject: batch\r\n\r\nhello\r\n"


def test_tracking_records_reach_the_store_while_the_writer_runs(runtime):
    runtime.start_log_writer(interval=0.05)
    try:
        for index in range(5):
            assert run_message(MESSAGE, queue_id=f"QR{index}").result == "continue"
        wanted = {f"QR{index}" for index in range(5)}
        found: set = set()
        deadline = time.monotonic() + 10           # a bound for a loaded machine, not a speed check
        while time.monotonic() < deadline and not wanted <= found:
            found = {r["queue_id"] for r in runtime.store.query_logs(kind="messages", limit=100)}
            time.sleep(0.05)
        assert wanted <= found
    finally:
        runtime.stop_log_writer()


def test_cached_time_stamp_matches_loggings_own():
    plain = logging.Formatter("%(asctime)s %(message)s")
    cached = SecondCachedFormatter("%(asctime)s %(message)s")
    for created in (1_800_000_000.25, 1_800_000_000.75, 1_800_000_001.5, 1_800_000_000.5):
        record = logging.LogRecord("imss_milter", logging.INFO, __file__, 1, "m %s", ("x",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert cached.format(record) == plain.format(record)
