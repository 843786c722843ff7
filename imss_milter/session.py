"""Per-connection and per-transaction state of one SMTP session seen through the milter.

Connection lives from connect to close; Transaction from MAIL FROM to the
end of message or an abort (Postfix's mail_reset()). The message is
spooled in memory up to a limit, then to an unlinked temporary file.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

from .policy.types import Envelope


class MessageTooLarge(Exception):
    """The message grew past max_message_size while it was being received."""


class Spool:
    """A byte buffer that moves to an anonymous temporary file past memory_limit."""

    def __init__(self, memory_limit: int, max_size: int, tmp_dir: str | None = None):
        self.memory_limit = memory_limit
        self.max_size = max_size
        self.tmp_dir = tmp_dir
        self.size = 0
        self._memory: list[bytes] | None = []
        self._file = None

    def write(self, chunk: bytes) -> None:
        if self.max_size and self.size + len(chunk) > self.max_size:
            raise MessageTooLarge(self.size + len(chunk))
        self.size += len(chunk)
        if self._file is None and self.size > self.memory_limit:
            # TemporaryFile is unlinked at once: a crash leaves nothing behind.
            self._file = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="imss-spool-")
            self._file.write(b"".join(self._memory))
            self._memory = None
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._memory.append(chunk)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def getvalue(self) -> bytes:
        if self._file is None:
            joined = b"".join(self._memory)
            self._memory = [joined]
            return joined
        self._file.flush()
        self._file.seek(0)
        data = self._file.read()
        self._file.seek(0, os.SEEK_END)
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []
        self.size = 0


@dataclass
class Connection:
    """What is known about the SMTP client for the whole connection."""

    client_ip: str | None = None
    client_name: str | None = None
    helo: str | None = None
    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    sender_decision: object | None = None   # a connect-stage decision kept for later stages


@dataclass
class Transaction:
    """One message: envelope, raw headers as received, and the spooled message."""

    spool: Spool
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    esmtp_params: dict = field(default_factory=dict)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    queue_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    rejected_recipients: list[str] = field(default_factory=list)

    def envelope(self, connection: Connection) -> Envelope:
        return Envelope(
            sender=self.sender,
            recipients=list(self.recipients),
            client_ip=connection.client_ip,
            client_name=connection.client_name,
            helo=connection.helo,
            queue_id=self.queue_id,
            reputation=list(getattr(connection.sender_decision, "categories", None) or []),
        )

    def close(self) -> None:
        self.spool.close()


def strip_angle(address: str) -> str:
    """'<a@b>' → 'a@b'; '<>' → ''. Tolerates surrounding spaces and a missing bracket."""
    address = address.strip()
    if address.startswith("<"):
        address = address[1:]
    if address.endswith(">"):
        address = address[:-1]
    return address.strip()


def parse_esmtp_params(params) -> dict:
    """ESMTP parameters ('SIZE=1234', 'BODY=8BITMIME') as an upper-cased key dict."""
    result = {}
    for item in params:
        if isinstance(item, bytes):
            item = item.decode("ascii", "replace")
        key, _, value = item.partition("=")
        result[key.upper()] = value
    return result
