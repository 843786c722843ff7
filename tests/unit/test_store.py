"""Store: durable quarantine writes, listing/get/delete/expire, schema version, log queries."""

import json
import os
import sqlite3
import stat
import time

import pytest

from imss_milter.errors import StoreError
from imss_milter.policy.types import Envelope
from imss_milter.store import Store, is_message_id
from imss_milter.store.sqlite import SCHEMA_VERSION

RAW = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: invoice\r\n\r\nplease pay\r\n"


def envelope(sender="alice@example.org", recipients=("bob@example.com",), queue_id="4ABC123"):
    return Envelope(sender=sender, recipients=list(recipients), client_ip="192.0.2.7", queue_id=queue_id)


@pytest.fixture
def store(tmp_path):
    with Store(str(tmp_path / "state")) as opened:
        yield opened


def held_files(state_dir):
    found = []
    for root, _, files in os.walk(os.path.join(state_dir, "quarantine")):
        found.extend(os.path.join(root, name) for name in files)
    return found


# --- durability ------------------------------------------------------------------

def test_quarantine_writes_private_file_with_exact_bytes(store):
    qid = store.quarantine("default", RAW, envelope(), "invoice", ["block-executables"], reason="exe")
    assert is_message_id(qid)
    files = held_files(store.state_dir)
    assert len(files) == 1 and files[0].endswith(qid + ".eml")
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    with open(files[0], "rb") as handle:
        assert handle.read() == RAW
    assert store.read_raw(qid) == RAW


def test_directories_are_private_and_created_lazily(tmp_path):
    state = tmp_path / "state"
    opened = Store(str(state))
    assert not state.exists()            # nothing happens before the first use
    opened.quarantine("default", RAW, envelope(), "invoice", [])
    for directory in (state, state / "quarantine"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "imss.db").st_mode) == 0o600
    opened.close()


def test_failed_index_insert_removes_file_and_raises(store):
    store.quarantine("default", RAW, envelope(), "first", [])
    # A real failure inside SQLite, at the insert, after the file is on disk.
    conn = sqlite3.connect(store.db_path)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON held_message "
                 "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="disk says no"):
        store.quarantine("default", RAW, envelope(), "second", [])
    assert len(held_files(store.state_dir)) == 1          # only the first message's file
    assert [m["subject"] for m in store.list()] == ["first"]
    leftovers = [f for f in held_files(store.state_dir) if ".tmp" in f]
    assert leftovers == []


def test_state_dir_that_cannot_be_created_raises_store_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    broken = Store(str(blocker / "state"))
    with pytest.raises(StoreError):
        broken.quarantine("default", RAW, envelope(), "x", [])


def test_unwritable_quarantine_dir_raises_store_error(tmp_path):
    # As root a chmod would not stop writes; a file in the way of the day
    # directory fails the write for everybody.
    state = tmp_path / "state"
    opened = Store(str(state))
    opened.counts()                                       # creates the layout
    day = time.strftime("%Y-%m-%d", time.gmtime())
    (state / "quarantine" / day).write_text("in the way")
    with pytest.raises(StoreError, match="cannot write quarantine file"):
        opened.quarantine("default", RAW, envelope(), "x", [])
    assert opened.list() == []
    opened.close()


def test_quarantine_records_an_event_in_the_same_transaction(store):
    qid = store.quarantine("dlp", RAW, envelope(), "invoice", ["outbound-cards"])
    events = store.query_logs(kind="events", category="quarantine")
    assert [(e["event"], e["queue_id"], e["detail"]["id"]) for e in events] == [("quarantined", "4ABC123", qid)]


# --- list / get / delete / expire --------------------------------------------------

def test_list_returns_spec_shape_newest_first(store):
    first = store.quarantine("default", RAW, envelope(), "one", ["r1"])
    second = store.quarantine("spam", b"Subject: two\n\nx", envelope(sender="", recipients=["a@x", "b@x"]),
                              "two", ["r2", "r3"])
    listed = store.list()
    assert [m["id"] for m in listed] == [second, first]
    top = listed[0]
    for key in ("id", "area", "time", "sender", "recipients", "subject", "size", "rules", "queue_id",
                "reason", "kind"):
        assert key in top
    assert top["area"] == "spam" and top["sender"] == "" and top["recipients"] == ["a@x", "b@x"]
    assert top["rules"] == ["r2", "r3"] and top["size"] == len(b"Subject: two\n\nx")
    assert top["time"].endswith("Z") and top["time"][10] == "T"
    assert [m["id"] for m in store.list(area="default")] == [first]
    assert len(store.list(limit=1)) == 1


def test_archive_and_quarantine_are_listed_separately(store):
    quarantined = store.quarantine("default", RAW, envelope(), "q", [])
    archived = store.quarantine("legal", RAW, envelope(), "a", [], kind="archive")
    assert [m["id"] for m in store.list()] == [quarantined]
    assert [m["id"] for m in store.list(kind="archive")] == [archived]
    assert store.counts() == {"default": 1} and store.counts("archive") == {"legal": 1}
    with pytest.raises(ValueError):
        store.quarantine("x", RAW, envelope(), "bad", [], kind="trash")


def test_get_unknown_or_malformed_ids(store):
    assert store.get("20260101T000000-" + "0" * 24) is None
    assert store.get("../../etc/passwd") is None
    with pytest.raises(StoreError, match="no quarantined message with id nope"):
        store.read_raw("nope")


def test_delete_removes_file_and_row_and_logs(store):
    qid = store.quarantine("default", RAW, envelope(), "invoice", [])
    assert store.delete(qid) is True
    assert store.get(qid) is None and held_files(store.state_dir) == []
    assert store.delete(qid) is False
    assert [e["event"] for e in store.query_logs(kind="events")] == ["quarantined", "deleted"]


def test_expire_honours_retention_per_area(store):
    old_default = store.quarantine("default", RAW, envelope(), "old", [])
    old_keep = store.quarantine("legal-hold", RAW, envelope(), "kept", [])
    old_spam = store.quarantine("spam", RAW, envelope(), "spam", [])
    ten_days_later = time.time() + 10 * 86400
    removed = store.expire({"spam": 7, "legal-hold": 0}, default_days=30, now=ten_days_later)
    assert removed == 1
    assert {m["id"] for m in store.list()} == {old_default, old_keep}
    assert store.get(old_spam) is None
    assert store.expire({"legal-hold": 0}, default_days=30, now=time.time() + 31 * 86400) == 1
    assert [m["id"] for m in store.list()] == [old_keep]   # 0 days = keep forever
    expired = [e for e in store.query_logs(kind="events") if e["event"] == "expired"]
    assert len(expired) == 2 and expired[0]["detail"]["retention_days"] == 7
    assert len(held_files(store.state_dir)) == 1


def test_expire_by_kind_leaves_other_kind(store):
    store.quarantine("default", RAW, envelope(), "q", [])
    archived = store.quarantine("default", RAW, envelope(), "a", [], kind="archive")
    assert store.expire({}, default_days=1, now=time.time() + 2 * 86400, kind="quarantine") == 1
    assert [m["id"] for m in store.list(kind="archive")] == [archived]


def test_schema_version_is_recorded_and_newer_schema_refused(tmp_path):
    state = str(tmp_path / "state")
    with Store(state) as opened:
        assert opened.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(os.path.join(state, "imss.db"))
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(state).list()


def test_data_survives_reopening(tmp_path):
    state = str(tmp_path / "state")
    with Store(state) as opened:
        qid = opened.quarantine("default", RAW, envelope(), "invoice", ["r"])
        opened.log_message({"queue_id": "Q1", "sender": "a@b", "recipients": ["c@d"], "verdict": "deliver"})
    with Store(state) as reopened:
        assert reopened.get(qid)["subject"] == "invoice"
        assert reopened.query_logs()[0]["queue_id"] == "Q1"


# --- logs ------------------------------------------------------------------------------

def tracking(**overrides):
    record = {"time": time.time(), "queue_id": "Q", "client_ip": "192.0.2.1", "client_name": "mx.example.org",
              "helo": "mx.example.org", "sender": "alice@example.org", "recipients": ["bob@example.com"],
              "subject": "hello", "size": 100, "direction": "inbound", "verdict": "deliver",
              "rules": [], "findings": [], "duration_ms": 1.5, "quarantine_id": None}
    record.update(overrides)
    return record


def test_log_message_round_trips_every_field(store):
    record = tracking(queue_id="7F3A", rules=["a", "b"], findings=[{"rule": "a", "detail": "x"}],
                      note="extra key kept")
    store.log_message(record)
    (stored,) = store.query_logs()
    for key in ("queue_id", "client_ip", "client_name", "helo", "sender", "recipients", "subject", "size",
                "direction", "verdict", "rules", "findings", "duration_ms", "quarantine_id"):
        assert stored[key] == record[key], key
    assert stored["note"] == "extra key kept"
    assert stored["time"].endswith("Z")


def test_log_message_tolerates_sloppy_records(store):
    store.log_message({"recipients": "only@one", "time": "not a time", "rules": None})
    (stored,) = store.query_logs()
    assert stored["recipients"] == ["only@one"] and stored["rules"] == []


def test_query_logs_filters(store):
    base = time.time() - 3600
    store.log_message(tracking(time=base, queue_id="A1", sender="Alice@Example.org", subject="Invoice 42",
                               verdict="quarantine", rules=["dlp-cards"]))
    store.log_message(tracking(time=base + 60, queue_id="B2", sender="bob@other.test",
                               recipients=["x@corp.test", "y@example.com"], subject="lunch_menu 100%"))
    store.log_message(tracking(time=base + 120, queue_id="C3", sender="", subject="bounce", verdict="reject",
                               rules=["dlp-cards-extra"]))

    def ids(**filters):
        return [r["queue_id"] for r in store.query_logs(**filters)]

    assert ids() == ["A1", "B2", "C3"]                       # oldest first
    assert ids(sender="alice@example.org") == ["A1"]        # case-insensitive exact address
    assert ids(sender="*@example.org") == ["A1"]
    assert ids(sender="bob@") == []                          # no glob: not a substring search
    assert ids(recipient="x@corp.test") == ["B2"]
    assert ids(recipient="*@example.com") == ["A1", "B2", "C3"]
    assert ids(subject="INVOICE") == ["A1"]
    assert ids(subject="_menu 100%") == ["B2"]               # LIKE wildcards are literal
    assert ids(subject="e_4") == []                   # "_" would match the space in "Invoice 42"
    assert ids(rule="dlp-cards") == ["A1"]                   # exact rule name, not a prefix
    assert ids(verdict="reject") == ["C3"]
    assert ids(queue_id="B2") == ["B2"]
    assert ids(since=base + 30) == ["B2", "C3"]
    assert ids(until=base + 30) == ["A1"]
    assert ids(since=base + 30, until=base + 90) == ["B2"]
    assert ids(limit=2) == ["B2", "C3"]                      # the latest two


def test_query_events_filters(store):
    store.log_event("policy", "matched", {"rule": "block-exe"}, queue_id="Q1", rule="block-exe")
    store.log_event("sender", "dnsbl", "198.51.100.7 listed in zen")
    store.log_event("system", "reload", {"rules": 12})
    events = store.query_logs(kind="events")
    assert [e["event"] for e in events] == ["matched", "dnsbl", "reload"]
    assert events[1]["detail"] == "198.51.100.7 listed in zen"
    assert events[2]["detail"] == {"rules": 12}
    assert [e["event"] for e in store.query_logs(kind="events", category="sender")] == ["dnsbl"]
    assert [e["event"] for e in store.query_logs(kind="events", rule="block-exe")] == ["matched"]
    assert [e["event"] for e in store.query_logs(kind="events", queue_id="Q1")] == ["matched"]
    with pytest.raises(ValueError):
        store.log_event("gossip", "x")
    with pytest.raises(ValueError):
        store.query_logs(kind="events", sender="a@b")
    with pytest.raises(ValueError):
        store.query_logs(kind="messages", category="policy")


def test_since_accepts_iso_strings_and_datetimes(store):
    from datetime import datetime, timezone
    store.log_message(tracking(time="2026-01-02T03:04:05Z", queue_id="OLD"))
    store.log_message(tracking(time=datetime(2026, 6, 1, tzinfo=timezone.utc), queue_id="NEW"))
    assert [r["queue_id"] for r in store.query_logs(since="2026-03-01")] == ["NEW"]
    assert store.query_logs(queue_id="OLD")[0]["time"] == "2026-01-02T03:04:05Z"
    assert [r["queue_id"] for r in store.query_logs(until=datetime(2026, 3, 1))] == ["OLD"]
    json.dumps(store.query_logs())                          # everything returned is JSON-ready


def test_log_messages_writes_a_batch_in_one_call(tmp_path):
    from imss_milter.store import Store
    store = Store(str(tmp_path))
    store.log_messages([{"queue_id": f"B{i}", "sender": "a@example.org", "recipients": ["b@example.com"],
                         "verdict": "deliver", "rules": []} for i in range(50)])
    assert len(store.query_logs(kind="messages", limit=1000)) == 50
    assert [r["queue_id"] for r in store.query_logs(kind="messages", queue_id="B7")] == ["B7"]


def test_a_batch_of_tracking_records_larger_than_one_insert_is_stored_whole_and_in_order(store):
    """log_messages writes many rows per INSERT statement: a batch spanning several statements
    (and an odd last one) keeps every record, every field and the order."""
    records = [{"time": 1_700_000_000 + index, "queue_id": f"Q{index:04d}", "client_ip": "192.0.2.7",
                "sender": f"s{index}@example.org", "recipients": [f"r{index}@example.com", "x@example.com"],
                "subject": f"message {index}", "size": 100 + index, "direction": "inbound",
                "verdict": "quarantine" if index % 7 == 0 else "deliver", "rules": ["r1"] if index % 2 else [],
                "findings": [{"rule": "r1", "condition": "spam"}] if index % 2 else [],
                "duration_ms": 1.5, "note": "n" if index == 100 else None} for index in range(157)]
    store.log_messages(records)
    stored = store.query_logs(limit=1000)
    assert [row["queue_id"] for row in stored] == [f"Q{index:04d}" for index in range(157)]
    assert stored[100]["recipients"] == ["r100@example.com", "x@example.com"]
    assert stored[99]["rules"] == ["r1"] and stored[98]["rules"] == []
    assert [row["verdict"] for row in stored].count("quarantine") == 23
    assert stored[156]["size"] == 256 and stored[3]["subject"] == "message 3"
