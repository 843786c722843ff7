"""Switching an SQLite database to WAL when several processes may open it for the first time at once."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the database to WAL (persistent: the first process to open it does it for all).

    The switch needs the database to itself. While another process holds a write lock on a new
    database (creating its schema), SQLite answers "database is locked" at once instead of waiting
    for the busy timeout (waiting could deadlock), so retry until that timeout: by then the other
    process has usually switched the mode itself and there is nothing left to do.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
