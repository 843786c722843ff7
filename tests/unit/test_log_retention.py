"""Retention of tracking records and events (logs.retention_days) and database maintenance."""

from __future__ import annotations

import os
import time

import pytest

from imss_milter.errors import ConfigError
from imss_milter.settings import load_settings
from imss_milter.store import Store
from imss_milter.store.retention import apply_log_retention

DAY = 86400


def record(when: float, subject: str) -> dict:
    return {"time": when, "queue_id": "Q1", "sender": "a@example.org", "recipients": ["b@example.com"],
            "subject": subject, "size": 10, "direction": "inbound", "verdict": "deliver", "rules": []}


def test_old_records_and_events_go_recent_ones_stay(tmp_path):
    now = time.time()
    config = tmp_path / "imss.yaml"
    config.write_text("logs: {retention_days: 7}\n")
    settings = load_settings(str(config))
    with Store(str(tmp_path / "state")) as store:
        store.log_messages([record(now - 30 * DAY, "ancient"), record(now - 8 * DAY, "old"),
                            record(now - 6 * DAY, "recent"), record(now, "today")])
        store.log_event("system", "start", {}, )
        with store._connection() as conn:      # an event from a month ago
            conn.execute("INSERT INTO event_log (time, category, event, detail) VALUES (?, 'system', 'start', '{}')",
                         (now - 30 * DAY,))
        removed = apply_log_retention(store, settings, now=now, vacuum=True)
        assert removed == {"message_log": 2, "event_log": 1}
        subjects = sorted(r["subject"] for r in store.query_logs(kind="messages", limit=100))
        assert subjects == ["recent", "today"]
        assert len(store.query_logs(kind="events", limit=100)) == 1
        assert apply_log_retention(store, settings, now=now) == {"message_log": 0, "event_log": 0}


def test_deletes_in_batches_and_vacuum_shrinks_the_file(tmp_path):
    now = time.time()
    with Store(str(tmp_path / "state")) as store:
        store.log_messages([record(now - 100 * DAY, "x" * 2000) for _ in range(3000)])
        size_before = os.path.getsize(store.db_path)
        removed = store.expire_logs(30, now=now, batch=500)
        assert removed["message_log"] == 3000
        store.vacuum()
        assert os.path.getsize(store.db_path) < size_before / 2


def test_retention_setting_is_validated_with_its_line(tmp_path):
    config = tmp_path / "imss.yaml"
    config.write_text("state_dir: /tmp/x\nlogs:\n  retention_days: 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(config))
    assert ":3" in str(info.value) and "at least 1" in str(info.value)
