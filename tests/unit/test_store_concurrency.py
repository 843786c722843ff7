"""Store under concurrent writers: threads of one process and several processes, nothing lost."""

import multiprocessing
import sqlite3
import threading
import time

from imss_milter.policy.types import Envelope
from imss_milter.sender.state import SQLiteState
from imss_milter.store import Store

PER_WORKER = 40


def write_batch(state_dir: str, worker: str, store=None) -> list[str]:
    """What one milter thread or worker does per message: maybe quarantine, always a tracking record."""
    own = store is None
    store = store or Store(state_dir)
    ids = []
    try:
        for n in range(PER_WORKER):
            queue_id = f"{worker}-{n}"
            envelope = Envelope(sender=f"{worker}@example.org", recipients=["rcpt@example.com"], queue_id=queue_id)
            quarantine_id = None
            if n % 4 == 0:
                quarantine_id = store.quarantine("default", f"Subject: {queue_id}\r\n\r\nbody".encode(),
                                                 envelope, queue_id, ["r"])
                ids.append(quarantine_id)
            store.log_message({"queue_id": queue_id, "sender": envelope.sender, "recipients": envelope.recipients,
                               "verdict": "quarantine" if quarantine_id else "deliver",
                               "quarantine_id": quarantine_id})
            store.log_event("policy", "matched", {"n": n}, queue_id=queue_id, rule="r")
    finally:
        if own:
            store.close()
    return ids


def _process_worker(state_dir, worker, results):
    results.put((worker, write_batch(state_dir, worker)))


def check_everything_recorded(state_dir, workers, quarantined_ids):
    with Store(state_dir) as store:
        messages = store.query_logs(limit=100000)
        events = store.query_logs(kind="events", category="policy", limit=100000)
        held = store.list(limit=100000)
        expected = {f"{w}-{n}" for w in workers for n in range(PER_WORKER)}
        assert sorted(m["queue_id"] for m in messages) == sorted(expected)
        assert sorted(e["queue_id"] for e in events) == sorted(expected)
        assert sorted(m["id"] for m in held) == sorted(quarantined_ids)
        assert len(quarantined_ids) == len(workers) * PER_WORKER // 4
        for qid in quarantined_ids:
            queue_id = store.get(qid)["queue_id"]
            assert store.read_raw(qid) == f"Subject: {queue_id}\r\n\r\nbody".encode()


def test_threads_sharing_one_store_lose_nothing(tmp_path):
    state_dir = str(tmp_path / "state")
    store = Store(state_dir)
    workers = [f"t{i}" for i in range(8)]
    results, errors = {}, []

    def run(worker):
        try:
            results[worker] = write_batch(state_dir, worker, store)
        except Exception as error:   # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    store.close()
    assert errors == []
    check_everything_recorded(state_dir, workers, [q for ids in results.values() for q in ids])


def test_processes_each_with_their_own_store_lose_nothing(tmp_path):
    state_dir = str(tmp_path / "state")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [f"p{i}" for i in range(4)]
    processes = [context.Process(target=_process_worker, args=(state_dir, w, results)) for w in workers]
    for process in processes:
        process.start()
    collected = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    check_everything_recorded(state_dir, workers, [q for ids in collected.values() for q in ids])


def _forked_worker(store, worker, results):
    results.put((worker, write_batch(store.state_dir, worker, store)))


def test_store_opened_before_fork_is_safe_in_children(tmp_path):
    # The daemon pre-forks workers; a Store touched in the parent must not
    # hand its SQLite connections to the children.
    state_dir = str(tmp_path / "state")
    store = Store(state_dir)
    parent_id = write_batch(state_dir, "parent", store)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [f"f{i}" for i in range(3)]
    processes = [context.Process(target=_forked_worker, args=(store, w, results)) for w in workers]
    for process in processes:
        process.start()
    collected = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    after_id = write_batch(state_dir, "parent-after", store)   # the parent's own pool still works
    store.close()
    ids = parent_id + after_id + [q for ids in collected.values() for q in ids]
    check_everything_recorded(state_dir, ["parent", "parent-after"] + workers, ids)


def hold_write_lock(db_path: str, seconds: float):
    """Another process creating its schema: a write lock on a new (rollback-mode) database for a while."""
    locked = threading.Event()

    def other_process():
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS other_schema (x INTEGER)")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    locked.wait(10)
    return holder


def test_sender_state_opened_while_another_process_writes_its_schema_waits_instead_of_failing(tmp_path):
    path = str(tmp_path / "sender.db")
    holder = hold_write_lock(path, 0.3)
    try:
        state = SQLiteState(path)
        state.close()
    finally:
        holder.join(10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_opening_a_new_store_while_another_process_writes_its_schema_waits_instead_of_failing(tmp_path):
    """SQLite refuses the switch to WAL at once (no busy wait) while another connection holds a write
    lock on a database still in rollback mode: two daemons or a CLI and a daemon starting together."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    db_path = str(state_dir / "imss.db")
    holder = hold_write_lock(db_path, 0.3)
    store = Store(str(state_dir))
    try:
        store.log_event("system", "start", {})
        assert [e["event"] for e in store.query_logs("events")] == ["start"]
    finally:
        holder.join(10)
        store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
