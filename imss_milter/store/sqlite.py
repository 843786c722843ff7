"""The embedded store: an SQLite index and log in state_dir/imss.db, one file per held message.

Layout under state_dir (directories 0700, files 0600):
    imss.db (+ -wal, -shm)          index, tracking records, events
    quarantine/YYYY-MM-DD/<id>.eml  the raw message, byte for byte

Many threads and several processes (daemon, CLI) use it at once: WAL mode,
a busy timeout, and a small pool of connections that are never shared by
two threads at the same time nor carried across fork().
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping

from imss_milter.durable import fsync_dir
from imss_milter.errors import StoreError
from imss_milter.sqlite_wal import enable_wal
from imss_milter.policy.types import Envelope
from imss_milter.store.base import (
    DEFAULT_RETENTION_DAYS,
    KINDS,
    LOG_CATEGORIES,
    StoreBackend,
    iso_utc,
    is_message_id,
    new_message_id,
    to_epoch,
)

DB_NAME = "imss.db"
QUARANTINE_DIR = "quarantine"
BUSY_TIMEOUT_SECONDS = 30.0
MAX_IDLE_CONNECTIONS = 8

# Each entry brings the schema from version N-1 to N; later issues append.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE held_message (
               id TEXT PRIMARY KEY,
               kind TEXT NOT NULL,
               area TEXT NOT NULL,
               time REAL NOT NULL,
               queue_id TEXT,
               sender TEXT NOT NULL,
               recipients TEXT NOT NULL,      -- JSON array
               subject TEXT NOT NULL,
               size INTEGER NOT NULL,
               rules TEXT NOT NULL,           -- JSON array
               reason TEXT NOT NULL,
               path TEXT NOT NULL,            -- relative to state_dir
               client_ip TEXT,
               released_at REAL,
               released_to TEXT               -- JSON array
           )""",
        "CREATE INDEX held_message_kind_area_time ON held_message (kind, area, time)",
        "CREATE INDEX held_message_time ON held_message (time)",
        """CREATE TABLE message_log (
               id INTEGER PRIMARY KEY,
               time REAL NOT NULL,
               queue_id TEXT,
               client_ip TEXT,
               client_name TEXT,
               helo TEXT,
               sender TEXT,
               recipients TEXT NOT NULL,      -- JSON array
               subject TEXT,
               size INTEGER,
               direction TEXT,
               verdict TEXT,
               rules TEXT NOT NULL,           -- JSON array
               findings TEXT,                 -- JSON
               duration_ms REAL,
               quarantine_id TEXT,
               extra TEXT                     -- JSON: record keys this schema has no column for
           )""",
        "CREATE INDEX message_log_time ON message_log (time)",
        "CREATE INDEX message_log_queue_id ON message_log (queue_id)",
        "CREATE INDEX message_log_sender ON message_log (sender COLLATE NOCASE)",
        """CREATE TABLE event_log (
               id INTEGER PRIMARY KEY,
               time REAL NOT NULL,
               category TEXT NOT NULL,
               event TEXT NOT NULL,
               queue_id TEXT,
               rule TEXT,
               detail TEXT                    -- JSON
           )""",
        "CREATE INDEX event_log_time ON event_log (time)",
        "CREATE INDEX event_log_queue_id ON event_log (queue_id)",
    ],
    # what the verdict found (DLP incidents with masked values), shown by `quarantine show`
    2: [
        "ALTER TABLE held_message ADD COLUMN findings TEXT",  # JSON array; NULL for rows held before version 2
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)

_MESSAGE_COLUMNS = ("time", "queue_id", "client_ip", "client_name", "helo", "sender", "recipients",
                    "subject", "size", "direction", "verdict", "rules", "findings", "duration_ms",
                    "quarantine_id")
# rows of one INSERT in log_messages: their values stay under SQLite's oldest limit of 999 variables
_ROWS_PER_INSERT = 999 // (len(_MESSAGE_COLUMNS) + 1)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _unjson(text, empty=None):
    if text is None:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return text


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(pattern: str) -> str:
    """An address glob (`*`, `?`) as a LIKE pattern with ESCAPE '\\'; no glob characters means exact."""
    return _escape_like(pattern).replace("*", "%").replace("?", "_")


def _make_private_dir(path: str) -> bool:
    """mkdir -m 0700 -p for the last component; True when it was created (its parent then needs an fsync)."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path} exists and is not a directory") from None
        return False


class SQLiteStore(StoreBackend):
    """Quarantine/archive and logs on SQLite plus files under state_dir."""

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        self.db_path = os.path.join(self.state_dir, DB_NAME)
        self.quarantine_dir = os.path.join(self.state_dir, QUARANTINE_DIR)
        self._lock = threading.Lock()
        self._ready_pid: int | None = None
        self._idle: list[sqlite3.Connection] = []
        self._pool_pid = os.getpid()
        # Connections inherited through fork() belong to the parent; closing
        # them in the child is unsafe, so they are only kept referenced.
        self._inherited: list[sqlite3.Connection] = []
        self._closed = False

    # --- connections ------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_SECONDS,
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        # Logs may lose the last transaction on power loss, never consistency;
        # quarantine inserts switch to FULL for their own transaction.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _connection(self):
        """Borrow a connection for this thread's exclusive use."""
        self._ensure_ready()
        with self._lock:
            if self._pool_pid != os.getpid():
                self._inherited.extend(self._idle)
                self._idle = []
                self._pool_pid = os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = self._open_connection()
            except sqlite3.Error as error:
                raise StoreError(f"cannot open {self.db_path}: {error}") from error
        healthy = True
        try:
            yield conn
        except BaseException:
            healthy = not conn.in_transaction
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                    healthy = True
            raise
        finally:
            with self._lock:
                keep = (healthy and not self._closed and self._pool_pid == os.getpid()
                        and len(self._idle) < MAX_IDLE_CONNECTIONS)
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def _ensure_ready(self) -> None:
        """Create directories, switch to WAL and migrate the schema, once per process."""
        if self._ready_pid == os.getpid():
            return
        with self._lock:
            if self._ready_pid == os.getpid():
                return
            if self._closed:
                raise StoreError("store is closed")
            try:
                os.makedirs(os.path.dirname(self.state_dir), exist_ok=True)
                _make_private_dir(self.state_dir)
                if _make_private_dir(self.quarantine_dir):
                    fsync_dir(self.state_dir)
            except OSError as error:
                raise StoreError(f"cannot create state directory {self.state_dir}: {error}") from error
            try:
                conn = self._open_connection()
                try:
                    enable_wal(conn, BUSY_TIMEOUT_SECONDS)
                    self._migrate(conn)
                finally:
                    conn.close()
                os.chmod(self.db_path, 0o600)
            except (sqlite3.Error, OSError) as error:
                raise StoreError(f"cannot open {self.db_path}: {error}") from error
            self._ready_pid = os.getpid()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.db_path} has schema version {current}, newer than the "
                                 f"{SCHEMA_VERSION} this imss-milter understands; upgrade imss-milter")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current != SCHEMA_VERSION:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT version FROM schema_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            same_process = self._pool_pid == os.getpid()
        if same_process:
            for conn in idle:
                conn.close()

    # --- quarantine and archive -------------------------------------------------

    def quarantine(self, area: str, raw: bytes, envelope: Envelope, subject: str,
                   rules: list[str], reason: str = "", kind: str = "quarantine", findings=None) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError("raw must be bytes")
        self._ensure_ready()
        now = time.time()
        qid = new_message_id(now)
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        relative_path = os.path.join(QUARANTINE_DIR, day, qid + ".eml")
        path = os.path.join(self.state_dir, relative_path)
        self._write_file_durably(path, bytes(raw))
        row = {
            "id": qid, "kind": kind, "area": str(area or "default"), "time": now,
            "queue_id": envelope.queue_id, "sender": envelope.sender or "",
            "recipients": _json(list(envelope.recipients)), "subject": subject or "",
            "size": len(raw), "rules": _json(list(rules or [])), "reason": reason or "",
            "path": relative_path, "client_ip": envelope.client_ip,
            # stored as given: engines mask values before they reach a verdict (SPEC §4b)
            "findings": _json(list(findings)) if findings else None,
        }
        try:
            self._insert_held(row)
        except BaseException as error:
            # The index is what makes a file a quarantined message: without its
            # row it must not stay behind as an invisible orphan.
            with contextlib.suppress(OSError):
                os.unlink(path)
                fsync_dir(os.path.dirname(path))
            if isinstance(error, StoreError):
                raise
            if isinstance(error, (sqlite3.Error, OSError)):
                raise StoreError(f"cannot index {kind} message in {self.db_path}: {error}") from error
            raise
        return qid

    def _write_file_durably(self, path: str, raw: bytes) -> None:
        directory = os.path.dirname(path)
        temporary = os.path.join(directory, "." + os.path.basename(path) + ".tmp")
        try:
            if _make_private_dir(directory):
                fsync_dir(self.quarantine_dir)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(raw)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, path)
            fsync_dir(directory)
        except OSError as error:
            for leftover in (temporary, path):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            raise StoreError(f"cannot write quarantine file {path}: {error}") from error

    def _insert_held(self, row: dict) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        detail = {"id": row["id"], "area": row["area"], "kind": row["kind"], "sender": row["sender"],
                  "size": row["size"], "rules": json.loads(row["rules"]), "reason": row["reason"]}
        with self._connection() as conn:
            conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"INSERT INTO held_message ({columns}) VALUES ({marks})", tuple(row.values()))
                    self._insert_event(conn, "quarantine",
                                       "archived" if row["kind"] == "archive" else "quarantined",
                                       detail, row["queue_id"], None, row["time"])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _held_dict(row: sqlite3.Row) -> dict:
        return {
            "id": row["id"], "area": row["area"], "time": iso_utc(row["time"]),
            "sender": row["sender"], "recipients": _unjson(row["recipients"], []),
            "subject": row["subject"], "size": row["size"], "rules": _unjson(row["rules"], []),
            "queue_id": row["queue_id"], "reason": row["reason"], "kind": row["kind"],
            "client_ip": row["client_ip"], "released": iso_utc(row["released_at"]),
            "released_to": _unjson(row["released_to"]), "findings": _unjson(row["findings"], []),
        }

    def list(self, area: str | None = None, kind: str = "quarantine", limit: int = 1000,
             since=None) -> list[dict]:
        clauses, params = [], []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if area is not None:
            clauses.append("area = ?")
            params.append(area)
        if since is not None:
            clauses.append("time >= ?")
            params.append(to_epoch(since))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT * FROM held_message {where} ORDER BY time DESC, id DESC LIMIT ?"
        rows = self._fetch(sql, params + [max(0, int(limit))])
        return [self._held_dict(row) for row in rows]

    def get(self, qid: str) -> dict | None:
        if not is_message_id(qid):
            return None
        rows = self._fetch("SELECT * FROM held_message WHERE id = ?", [qid])
        return self._held_dict(rows[0]) if rows else None

    def _path_of(self, qid: str) -> str | None:
        if not is_message_id(qid):
            return None
        rows = self._fetch("SELECT path FROM held_message WHERE id = ?", [qid])
        return os.path.join(self.state_dir, rows[0]["path"]) if rows else None

    def read_raw(self, qid: str) -> bytes:
        path = self._path_of(qid)
        if path is None:
            raise StoreError(f"no quarantined message with id {qid}")
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise StoreError(f"message {qid} is indexed but its file cannot be read: {error}") from error

    def delete(self, qid: str) -> bool:
        return self._remove([qid], "deleted") == 1

    def expire(self, retention_days_by_area: Mapping[str, int | None],
               default_days: int | None = DEFAULT_RETENTION_DAYS, now=None,
               kind: str | None = None) -> int:
        """Retention of None or <= 0 days keeps an area's messages forever."""
        now_epoch = time.time() if now is None else to_epoch(now)
        kind_clause, kind_params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        areas = [row["area"] for row in
                 self._fetch(f"SELECT DISTINCT area FROM held_message {kind_clause}", kind_params)]
        expired = 0
        for area in areas:
            days = retention_days_by_area.get(area, default_days)
            if days is None or days <= 0:
                continue
            cutoff = now_epoch - days * 86400
            clause = "area = ? AND time < ?" + (" AND kind = ?" if kind else "")
            ids = [row["id"] for row in
                   self._fetch(f"SELECT id FROM held_message WHERE {clause}", [area, cutoff] + kind_params)]
            expired += self._remove(ids, "expired", {"retention_days": days})
        return expired

    def _remove(self, ids: list[str], event: str, extra: dict | None = None) -> int:
        """Delete index rows first, then files: a crash in between leaves a stray file, never a dangling row."""
        ids = [qid for qid in ids if is_message_id(qid)]
        removed_paths = []
        try:
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                for qid in ids:
                    row = conn.execute("SELECT * FROM held_message WHERE id = ?", (qid,)).fetchone()
                    if row is None:
                        continue
                    conn.execute("DELETE FROM held_message WHERE id = ?", (qid,))
                    detail = {"id": qid, "area": row["area"], "kind": row["kind"], **(extra or {})}
                    self._insert_event(conn, "quarantine", event, detail, row["queue_id"], None, time.time())
                    removed_paths.append(os.path.join(self.state_dir, row["path"]))
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"cannot remove messages from {self.db_path}: {error}") from error
        for path in removed_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return len(removed_paths)

    def expire_logs(self, retention_days: int, now=None, batch: int = 5000) -> dict[str, int]:
        """Delete tracking records and events older than retention_days, a batch per transaction so
        workers writing their records never wait long for the lock."""
        cutoff = (time.time() if now is None else to_epoch(now)) - retention_days * 86400
        removed = {}
        for table in ("message_log", "event_log"):
            total = 0
            while True:
                try:
                    with self._connection() as conn:
                        deleted = conn.execute(
                            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE time < ? LIMIT ?)",
                            (cutoff, batch)).rowcount
                except sqlite3.Error as error:
                    raise StoreError(f"cannot expire {table} in {self.db_path}: {error}") from error
                total += max(deleted, 0)
                if deleted < batch:
                    break
            removed[table] = total
        return removed

    def vacuum(self) -> None:
        """Give the space of deleted rows back and fold the WAL into the database file."""
        try:
            with self._connection() as conn:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.execute("PRAGMA optimize")
        except sqlite3.Error as error:
            raise StoreError(f"cannot vacuum {self.db_path}: {error}") from error

    def counts(self, kind: str = "quarantine") -> dict[str, int]:
        rows = self._fetch("SELECT area, COUNT(*) AS n FROM held_message WHERE kind = ? GROUP BY area", [kind])
        return {row["area"]: row["n"] for row in rows}

    def _mark_released(self, qid: str, recipients: list[str], refused: dict) -> None:
        try:
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute("SELECT queue_id, area, released_to FROM held_message WHERE id = ?",
                                   (qid,)).fetchone()
                if row is None:
                    raise StoreError(f"no quarantined message with id {qid}")
                released_to = list(_unjson(row["released_to"], []) or []) + recipients
                conn.execute("UPDATE held_message SET released_at = ?, released_to = ? WHERE id = ?",
                             (time.time(), _json(released_to), qid))
                detail = {"id": qid, "area": row["area"], "recipients": recipients}
                if refused:
                    detail["refused"] = refused
                self._insert_event(conn, "quarantine", "released", detail, row["queue_id"], None, time.time())
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(str(error)) from error

    # --- logs -------------------------------------------------------------------

    def log_message(self, record: dict) -> None:
        self.log_messages([record])

    def log_messages(self, records) -> None:
        """Several tracking records in one transaction (the daemon batches them off the mail path)."""
        rows = [self._message_row(record) for record in records]
        if not rows:
            return
        columns = ", ".join(rows[0])
        marks = "(" + ", ".join("?" for _ in rows[0]) + ")"
        try:
            with self._connection() as conn:
                conn.execute("BEGIN")          # autocommit connection: one explicit transaction
                # Many rows per INSERT: sqlite3 lets the GIL go at every statement step, and in a
                # worker each release is a hand-off to a connection thread (executemany: one per row).
                for first in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[first:first + _ROWS_PER_INSERT]
                    conn.execute(f"INSERT INTO message_log ({columns}) VALUES {', '.join([marks] * len(chunk))}",
                                 [value for row in chunk for value in row.values()])
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"cannot write {self.db_path}: {error}") from error

    @staticmethod
    def _message_row(record: dict) -> dict:
        values = {column: record.get(column) for column in _MESSAGE_COLUMNS}
        for column in ("recipients", "rules"):
            value = values[column]
            values[column] = _json([value] if isinstance(value, str) else list(value or []))
        values["findings"] = None if values["findings"] is None else _json(values["findings"])
        try:
            values["time"] = to_epoch(record.get("time")) or time.time()
        except (TypeError, ValueError):
            values["time"] = time.time()   # a bad timestamp must not cost the record
        extra = {key: value for key, value in record.items() if key not in _MESSAGE_COLUMNS}
        values["extra"] = _json(extra) if extra else None
        return values

    def log_event(self, category: str, event: str, detail: dict | str | None = None,
                  queue_id: str | None = None, rule: str | None = None) -> None:
        if category not in LOG_CATEGORIES:
            raise ValueError(f"event category must be one of {LOG_CATEGORIES}, not {category!r}")
        try:
            with self._connection() as conn:
                self._insert_event(conn, category, event, detail, queue_id, rule, time.time())
        except sqlite3.Error as error:
            raise StoreError(f"cannot write event to {self.db_path}: {error}") from error

    @staticmethod
    def _insert_event(conn, category, event, detail, queue_id, rule, when) -> None:
        conn.execute("INSERT INTO event_log (time, category, event, queue_id, rule, detail) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (when, category, event, queue_id, rule, None if detail is None else _json(detail)))

    def query_logs(self, kind: str = "messages", since=None, until=None, sender=None,
                   recipient=None, subject=None, queue_id=None, rule=None, verdict=None,
                   category=None, limit: int = 100) -> list[dict]:
        """The latest `limit` matching records, oldest first (like a log file's tail).

        sender/recipient take an address or a glob (`*@example.com`),
        case-insensitive; subject is a case-insensitive substring.
        """
        clauses, params = [], []
        if since is not None:
            clauses.append("time >= ?")
            params.append(to_epoch(since))
        if until is not None:
            clauses.append("time <= ?")
            params.append(to_epoch(until))
        if queue_id:
            clauses.append("queue_id = ?")
            params.append(queue_id)
        if kind == "messages":
            if category:
                raise ValueError("category filters events, not message records")
            table = "message_log"
            if sender is not None:
                clauses.append("sender LIKE ? ESCAPE '\\'")
                params.append(like_pattern(sender))
            if recipient is not None:
                clauses.append("EXISTS (SELECT 1 FROM json_each(recipients) WHERE value LIKE ? ESCAPE '\\')")
                params.append(like_pattern(recipient))
            if subject is not None:
                clauses.append("subject LIKE ? ESCAPE '\\'")
                params.append("%" + _escape_like(subject) + "%")
            if rule:
                clauses.append("EXISTS (SELECT 1 FROM json_each(rules) WHERE value = ?)")
                params.append(rule)
            if verdict:
                clauses.append("verdict = ?")
                params.append(verdict)
        elif kind == "events":
            unsupported = [name for name, value in (("sender", sender), ("recipient", recipient),
                                                    ("subject", subject), ("verdict", verdict)) if value]
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)} filter message records, not events")
            table = "event_log"
            if rule:
                clauses.append("rule = ?")
                params.append(rule)
            if category:
                clauses.append("category = ?")
                params.append(category)
        else:
            raise ValueError(f"kind must be 'messages' or 'events', not {kind!r}")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT * FROM {table} {where} ORDER BY time DESC, id DESC LIMIT ?"
        rows = self._fetch(sql, params + [max(0, int(limit))])
        convert = self._message_dict if kind == "messages" else self._event_dict
        return [convert(row) for row in reversed(rows)]

    @staticmethod
    def _message_dict(row: sqlite3.Row) -> dict:
        record = {column: row[column] for column in _MESSAGE_COLUMNS}
        record["time"] = iso_utc(row["time"])
        record["recipients"] = _unjson(row["recipients"], [])
        record["rules"] = _unjson(row["rules"], [])
        record["findings"] = _unjson(row["findings"])
        extra = _unjson(row["extra"])
        if isinstance(extra, dict):
            for key, value in extra.items():
                record.setdefault(key, value)
        return record

    @staticmethod
    def _event_dict(row: sqlite3.Row) -> dict:
        return {"time": iso_utc(row["time"]), "category": row["category"], "event": row["event"],
                "queue_id": row["queue_id"], "rule": row["rule"], "detail": _unjson(row["detail"])}

    # --- plumbing ---------------------------------------------------------------

    def _fetch(self, sql: str, params) -> list[sqlite3.Row]:
        try:
            with self._connection() as conn:
                return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read {self.db_path}: {error}") from error

    def _execute(self, sql: str, params) -> None:
        try:
            with self._connection() as conn:
                conn.execute(sql, params)
        except sqlite3.Error as error:
            raise StoreError(f"cannot write {self.db_path}: {error}") from error
