"""Retention: remove quarantined and archived messages older than their area allows.

Shared by `imss-milter quarantine expire` and the daemon's hourly sweep.
"""

from __future__ import annotations

from imss_milter.settings import DEFAULT_ARCHIVE_RETENTION, DEFAULT_QUARANTINE_RETENTION


def apply_log_retention(store, settings, now=None, vacuum: bool = False) -> dict[str, int]:
    """Drop tracking records and events past logs.retention_days; vacuum when asked and anything went
    (VACUUM rewrites the whole file, so the daemon asks only once a day)."""
    removed = store.expire_logs(getattr(settings, "log_retention_days", 90), now=now)
    if vacuum and any(removed.values()):
        store.vacuum()
    return removed


def apply_retention(store, settings, now=None) -> dict[str, int]:
    """Expire quarantine and archive per their areas' retention; the daemon may call this too."""
    def days(areas) -> dict:
        return {name: area.retention_days for name, area in (areas or {}).items()}
    return {
        "quarantine": store.expire(days(settings.quarantine_areas), DEFAULT_QUARANTINE_RETENTION,
                                   now=now, kind="quarantine"),
        "archive": store.expire(days(getattr(settings, "archive_areas", {})), DEFAULT_ARCHIVE_RETENTION,
                                now=now, kind="archive"),
    }
