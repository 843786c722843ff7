"""Durable file-system steps shared by the stores that must survive a crash."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """fsync a directory, so the names created, renamed or removed in it are on disk (a file's own
    fsync does not cover its directory entry). Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
