"""IP Profiler state behind one interface: sliding-window event counters and temporary blocks.

SQLiteState is the embedded default (one file in state_dir, WAL so several
worker processes share it); RedisState lets several gateway hosts share
counters and blocks. Both raise StateUnavailable when the store cannot
answer, and the profiler decides what that means for mail (on_error).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from ..errors import ImssError
from ..sqlite_wal import enable_wal
from .config import PROFILER_KINDS


class StateUnavailable(ImssError):
    """The counter/block store could not answer (Redis down, database locked too long...)."""

    default_message = "sender-filtering state store unavailable"


@dataclass(frozen=True)
class Block:
    """A temporarily blocked client IP; times are Unix seconds so other hosts and restarts agree."""

    ip: str
    kind: str           # dha | bounce | spam | virus (or "manual")
    reason: str
    action: str         # reject | tempfail
    since: float
    until: float

    def to_json(self) -> dict:
        return asdict(self)


def window_start(now: float, window: float) -> float:
    """Events strictly after this instant are inside the sliding window ending at now."""
    return now - window


def count_in_window(timestamps, now: float, window: float) -> int:
    """How many event times fall in (now - window, now]."""
    start = window_start(now, window)
    return sum(1 for t in timestamps if start < t <= now)


def threshold_reached(count: int, threshold: int) -> bool:
    """The event that brings the count up to the threshold is the one that blocks."""
    return count >= threshold


def merge_block(existing: Block | None, new: Block) -> Block:
    """A new block never shortens one already in force; the earlier start is kept for the record."""
    if existing is None or existing.until <= new.since:
        return new
    if existing.until >= new.until:
        return existing
    return Block(new.ip, new.kind, new.reason, new.action, existing.since, new.until)


class StateBackend:
    """What the IP Profiler needs from a store."""

    def add_event(self, ip: str, kind: str, now: float, window: float) -> int:
        """Record one event and return how many fall in the window ending now (this one included)."""
        raise NotImplementedError

    def get_block(self, ip: str, now: float) -> Block | None:
        raise NotImplementedError

    def set_block(self, block: Block) -> Block:
        """Store a block (merged with one in force) and return what is now stored."""
        raise NotImplementedError

    def list_blocks(self, now: float) -> list[Block]:
        raise NotImplementedError

    def remove_block(self, ip: str, now: float) -> bool:
        """Lift a block and forget the IP's counters, so one more event does not block it again at once."""
        raise NotImplementedError

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sender_events (ip TEXT NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sender_events_by_ip ON sender_events (ip, kind, ts);
CREATE INDEX IF NOT EXISTS sender_events_by_ts ON sender_events (ts);
CREATE TABLE IF NOT EXISTS sender_blocks (
    ip TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, action TEXT NOT NULL,
    since REAL NOT NULL, until REAL NOT NULL);
"""

# Events older than this are never inside any window we allow (the longest sane window is a day or so).
_PRUNE_EVERY = 500


class SQLiteState(StateBackend):
    """One SQLite file; a connection per process, serialised by a lock, WAL + busy_timeout across processes."""

    def __init__(self, path: str, busy_timeout: float = 5.0, max_window: float = 7 * 86400):
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_window = max_window
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = None
        self._writes = 0
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with self._lock:
            self._connect()

    def _connect(self) -> sqlite3.Connection:
        # a connection inherited across fork() is unsafe: reopen in each process
        if self._connection is None or self._pid != os.getpid():
            try:
                connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                             check_same_thread=False)
                connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                enable_wal(connection, self.busy_timeout)
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StateUnavailable(f"cannot open {self.path}: {exc}") from None
            self._connection = connection
            self._pid = os.getpid()
        return self._connection

    def _transaction(self, work):
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StateUnavailable(f"{self.path}: {exc}") from None

    def _read(self, work):
        with self._lock:
            try:
                return work(self._connect())
            except sqlite3.Error as exc:
                raise StateUnavailable(f"{self.path}: {exc}") from None

    def add_event(self, ip: str, kind: str, now: float, window: float) -> int:
        self._writes += 1
        prune_all = self._writes % _PRUNE_EVERY == 0

        def work(connection):
            connection.execute("INSERT INTO sender_events (ip, kind, ts) VALUES (?, ?, ?)", (ip, kind, now))
            connection.execute("DELETE FROM sender_events WHERE ip = ? AND kind = ? AND ts <= ?",
                               (ip, kind, window_start(now, window)))
            if prune_all:
                connection.execute("DELETE FROM sender_events WHERE ts <= ?", (now - self.max_window,))
                connection.execute("DELETE FROM sender_blocks WHERE until <= ?", (now,))
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM sender_events WHERE ip = ? AND kind = ? AND ts > ? AND ts <= ?",
                (ip, kind, window_start(now, window), now)).fetchone()
            return count

        return self._transaction(work)

    @staticmethod
    def _block(row) -> Block:
        return Block(row[0], row[1], row[2], row[3], row[4], row[5])

    def get_block(self, ip: str, now: float) -> Block | None:
        row = self._read(lambda c: c.execute(
            "SELECT ip, kind, reason, action, since, until FROM sender_blocks WHERE ip = ? AND until > ?",
            (ip, now)).fetchone())
        return self._block(row) if row else None

    def set_block(self, block: Block) -> Block:
        def work(connection):
            row = connection.execute(
                "SELECT ip, kind, reason, action, since, until FROM sender_blocks WHERE ip = ?",
                (block.ip,)).fetchone()
            merged = merge_block(self._block(row) if row else None, block)
            connection.execute(
                "INSERT OR REPLACE INTO sender_blocks (ip, kind, reason, action, since, until) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (merged.ip, merged.kind, merged.reason, merged.action, merged.since, merged.until))
            return merged

        return self._transaction(work)

    def list_blocks(self, now: float) -> list[Block]:
        rows = self._read(lambda c: c.execute(
            "SELECT ip, kind, reason, action, since, until FROM sender_blocks WHERE until > ? ORDER BY since",
            (now,)).fetchall())
        return [self._block(row) for row in rows]

    def remove_block(self, ip: str, now: float) -> bool:
        def work(connection):
            removed = connection.execute("DELETE FROM sender_blocks WHERE ip = ? AND until > ?",
                                         (ip, now)).rowcount
            connection.execute("DELETE FROM sender_blocks WHERE ip = ?", (ip,))
            connection.execute("DELETE FROM sender_events WHERE ip = ?", (ip,))
            return removed > 0

        return self._transaction(work)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


class RedisState(StateBackend):
    """Counters as sorted sets of event times (sliding window), blocks as keys that expire at their end.

    Keys: {prefix}ev:{kind}:{ip} (zset), {prefix}block:{ip} (JSON), {prefix}blocks (zset ip → until, for listing).
    """

    def __init__(self, url: str, prefix: str = "imss:sender:", timeout: float = 1.0, retry_after: float = 2.0):
        import redis  # imported here so the embedded default needs no Redis client installed

        self._redis_errors = (redis.RedisError, OSError)
        self._watch_error = redis.WatchError
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self.prefix = prefix
        self.retry_after = retry_after
        self._down_until = 0.0      # after a failure, skip Redis for a moment instead of paying a timeout per call
        self._lock = threading.Lock()

    def _call(self, work):
        if time.monotonic() < self._down_until:
            raise StateUnavailable("Redis unavailable (retrying shortly)")
        try:
            return work(self.client)
        except self._redis_errors as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_after
            raise StateUnavailable(f"Redis: {exc}") from None

    def _events_key(self, ip, kind):
        return f"{self.prefix}ev:{kind}:{ip}"

    def _block_key(self, ip):
        return f"{self.prefix}block:{ip}"

    def add_event(self, ip: str, kind: str, now: float, window: float) -> int:
        key = self._events_key(ip, kind)
        member = f"{now:.6f}:{uuid.uuid4().hex[:12]}"     # unique, so simultaneous events all count

        def work(client):
            pipe = client.pipeline(transaction=True)
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", window_start(now, window))
            pipe.zcount(key, f"({window_start(now, window)}", now)
            pipe.expire(key, int(window) + 1)
            return int(pipe.execute()[2])

        return self._call(work)

    @staticmethod
    def _decode(raw) -> Block | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return Block(str(data["ip"]), str(data["kind"]), str(data["reason"]), str(data["action"]),
                         float(data["since"]), float(data["until"]))
        except (ValueError, KeyError, TypeError):
            return None

    def get_block(self, ip: str, now: float) -> Block | None:
        block = self._decode(self._call(lambda c: c.get(self._block_key(ip))))
        return block if block is not None and block.until > now else None

    def set_block(self, block: Block) -> Block:
        key = self._block_key(block.ip)
        index = f"{self.prefix}blocks"

        def work(client):
            # optimistic transaction: another gateway may be blocking the same IP at the same moment
            with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        merged = merge_block(self._decode(pipe.get(key)), block)
                        pipe.multi()
                        pipe.set(key, json.dumps(merged.to_json()), pxat=int(merged.until * 1000))
                        pipe.zadd(index, {merged.ip: merged.until})
                        pipe.zremrangebyscore(index, "-inf", f"({block.since}")
                        pipe.execute()
                        return merged
                    except self._watch_error:
                        continue

        return self._call(work)

    def list_blocks(self, now: float) -> list[Block]:
        index = f"{self.prefix}blocks"

        def work(client):
            ips = [ip.decode() if isinstance(ip, bytes) else ip for ip in client.zrangebyscore(index, f"({now}", "+inf")]
            if not ips:
                return []
            raws = client.mget([self._block_key(ip) for ip in ips])
            return [b for b in (self._decode(raw) for raw in raws) if b is not None and b.until > now]

        return sorted(self._call(work), key=lambda b: b.since)

    def remove_block(self, ip: str, now: float) -> bool:
        def work(client):
            pipe = client.pipeline(transaction=True)
            pipe.get(self._block_key(ip))
            pipe.delete(self._block_key(ip))
            pipe.zrem(f"{self.prefix}blocks", ip)
            for kind in PROFILER_KINDS:
                pipe.delete(self._events_key(ip, kind))
            block = self._decode(pipe.execute()[0])
            return block is not None and block.until > now

        return self._call(work)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass
