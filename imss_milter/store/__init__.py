"""Quarantine/archive store and event logs: `Store(state_dir)` is the embedded SQLite backend.

Callers code against StoreBackend's methods so that a shared backend
(PostgreSQL) can replace SQLite without changes elsewhere.
"""

from imss_milter.store.base import (
    DEFAULT_RETENTION_DAYS,
    KINDS,
    LOG_CATEGORIES,
    StoreBackend,
    is_message_id,
    iso_utc,
    to_epoch,
)
from imss_milter.store.sqlite import SQLiteStore

Store = SQLiteStore

__all__ = ["Store", "SQLiteStore", "StoreBackend", "DEFAULT_RETENTION_DAYS", "KINDS",
           "LOG_CATEGORIES", "is_message_id", "iso_utc", "to_epoch"]
