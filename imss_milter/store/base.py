"""The store interface every backend implements, and the backend-neutral pieces.

A backend keeps quarantined/archived messages with their index, one tracking
record per message and the event log. Release (SMTP reinjection) is written
once here on top of the backend's primitives, so SQLite and a later
PostgreSQL backend behave the same.
"""

from __future__ import annotations

import abc
import re
import secrets
import time
from collections.abc import Mapping
from datetime import date, datetime, timezone

from imss_milter.errors import StoreError
from imss_milter.policy.types import Envelope
from imss_milter.store.smtp import reinject

KINDS = ("quarantine", "archive")
LOG_CATEGORIES = ("policy", "sender", "quarantine", "system")
DEFAULT_RETENTION_DAYS = 30

# Ids are "<UTC time to the second>-<96 random bits>": they sort by time and
# cannot be guessed, so a leaked id never leads to its neighbours.
_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{24}$")


def new_message_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(12)}"


def is_message_id(text: str) -> bool:
    """True when text has the shape of an id (anything else is never looked up)."""
    return bool(_ID_PATTERN.match(text or ""))


def to_epoch(value) -> float | None:
    """Seconds since the epoch from a float, a datetime (naive means UTC), a date or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    raise TypeError(f"not a time: {value!r}")


def iso_utc(epoch: float | None) -> str | None:
    """ISO 8601 UTC to the second, the form every record shows ("2026-12-01T10:00:00Z")."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreBackend(abc.ABC):
    """What the milter and the commands may ask of a store. All methods are thread-safe."""

    # --- quarantine and archive -------------------------------------------------

    @abc.abstractmethod
    def quarantine(self, area: str, raw: bytes, envelope: Envelope, subject: str,
                   rules: list[str], reason: str = "", kind: str = "quarantine", findings=None) -> str:
        """Durably keep raw; returns its id only once both the file and its index row are on disk.

        `findings` (the verdict's, JSON-able, values already masked) are kept with it for `show`."""

    @abc.abstractmethod
    def list(self, area: str | None = None, kind: str = "quarantine", limit: int = 1000,
             since=None) -> list[dict]:
        """Newest first."""

    @abc.abstractmethod
    def get(self, qid: str) -> dict | None: ...

    @abc.abstractmethod
    def read_raw(self, qid: str) -> bytes: ...

    @abc.abstractmethod
    def delete(self, qid: str) -> bool:
        """True when something was deleted."""

    @abc.abstractmethod
    def expire(self, retention_days_by_area: Mapping[str, int | None],
               default_days: int | None = DEFAULT_RETENTION_DAYS, now=None,
               kind: str | None = None) -> int:
        """Remove what is older than its area's retention; returns how many went."""

    @abc.abstractmethod
    def counts(self, kind: str = "quarantine") -> dict[str, int]:
        """Messages held per area (for the imss_quarantine_messages gauge)."""

    @abc.abstractmethod
    def _mark_released(self, qid: str, recipients: list[str], refused: dict) -> None:
        """Record on the index row and in the event log that qid was reinjected."""

    # --- logs -------------------------------------------------------------------

    @abc.abstractmethod
    def log_message(self, record: dict) -> None: ...

    @abc.abstractmethod
    def log_messages(self, records) -> None: ...

    @abc.abstractmethod
    def log_event(self, category: str, event: str, detail: dict | str | None = None,
                  queue_id: str | None = None, rule: str | None = None) -> None: ...

    @abc.abstractmethod
    def query_logs(self, kind: str = "messages", since=None, until=None, sender=None,
                   recipient=None, subject=None, queue_id=None, rule=None, verdict=None,
                   category=None, limit: int = 100) -> list[dict]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def expire_logs(self, retention_days: int, now=None) -> dict[str, int]:
        """Delete log records older than retention_days; {table: rows removed}."""
        raise NotImplementedError

    def vacuum(self) -> None:
        """Database maintenance after deletions (a no-op where the backend does its own)."""

    # --- shared behaviour -------------------------------------------------------

    def release(self, qid: str, smtp_host: str, smtp_port: int,
                recipients: list[str] | None = None, timeout: float = 60.0) -> dict:
        """Reinject a held message with its original envelope (or to `recipients`).

        The message stays in the store, marked released, so an administrator
        can see what was let out and retention still removes it later.
        Returns the recipients the server refused ({} when all were
        accepted); raises StoreError when nothing was delivered.
        """
        meta = self.get(qid)
        if meta is None:
            raise StoreError(f"no quarantined message with id {qid}")
        targets = list(recipients) if recipients else list(meta["recipients"])
        if not targets:
            raise StoreError(f"message {qid} has no recipients to release to")
        raw = self.read_raw(qid)
        refused = reinject(raw, meta["sender"], targets, smtp_host, smtp_port, timeout=timeout)
        try:
            self._mark_released(qid, [t for t in targets if t not in refused], refused)
        except StoreError as error:
            raise StoreError(f"message {qid} was released but recording it failed: {error}") from error
        return refused

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
