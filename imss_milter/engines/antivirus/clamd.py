"""The clamd backend: each decoded part sent on its own with clamd's INSTREAM command over reused sessions.

Protocol (clamd(8)): `zIDSESSION\\0` opens a session on which commands are
answered `<n>: <reply>\\0`; `zINSTREAM\\0` is followed by chunks, each a
4-byte big-endian length and that many bytes, and a zero length ends the
stream; the reply is `stream: OK`, `stream: <Name> FOUND` or `<why> ERROR`.
Sessions are kept in a small pool (clamd closes idle ones after its
IdleTimeout, so a reused session that fails is retried once on a new one)
and dropped after a fork. Any failure to get an answer raises ClamdError,
which the framework answers per the engine's on_error.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass

from ...errors import ImssError
from ...mime.model import FLAG_ARCHIVE_LIMIT
from .categories import category_from_name
from .engine import AntivirusEngine

log = logging.getLogger("imss_milter")

CHUNK_SIZE = 64 * 1024
DEFAULT_MAX_STREAM = 25 * 1024 * 1024      # clamd's default StreamMaxLength
IDLE_SESSIONS = 8
MAX_REPLY = 64 * 1024
_INET = re.compile(r"^inet6?:(?P<port>\d{1,5})(?:@(?P<host>\S+))?$")
_HOST_PORT = re.compile(r"^(?:\[(?P<host6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5})$")
_SESSION_PREFIX = re.compile(r"^\d+: ")


class ClamdError(ImssError):
    """clamd could not be reached or did not answer as expected: the scan has no verdict."""

    default_message = "clamd failed"


class StreamTooLarge(ClamdError):
    """clamd refused a stream as longer than its StreamMaxLength."""


@dataclass(frozen=True)
class Address:
    """Where clamd listens: a unix socket path, or host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """`unix:/path`, `/path`, `inet:PORT@HOST`, `inet:PORT` (localhost) or `host:port`; ValueError otherwise."""
    text = text.strip()
    if text.startswith(("unix:", "local:")):
        path = text.split(":", 1)[1]
        if path.startswith("/"):
            return Address(path=path)
    elif text.startswith("/"):
        return Address(path=text)
    else:
        match = _INET.match(text) or _HOST_PORT.match(text)
        if match:
            port = int(match["port"])
            groups = match.groupdict()
            host = groups.get("host") or groups.get("host6") or "127.0.0.1"
            if 0 < port < 65536:
                return Address(host=host, port=port)
    raise ValueError(f"expected unix:/path/to/clamd.ctl, inet:PORT@HOST or HOST:PORT, got {text!r}")


def parse_reply(reply: bytes) -> str | None:
    """The signature name of a FOUND reply, None for OK; ClamdError for ERROR or anything else."""
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace").strip()
    text = _SESSION_PREFIX.sub("", text, count=1)
    if text.endswith(" FOUND"):
        body = text[:-len(" FOUND")]
        name = body.split(": ", 1)[1] if ": " in body else body
        if name.strip():
            return name.strip()
    elif text.endswith("OK") and (text == "OK" or text.endswith(": OK")):
        return None
    if "size limit exceeded" in text:
        raise StreamTooLarge(f"clamd: {text}")
    if text.endswith("ERROR"):
        raise ClamdError(f"clamd: {text}")
    raise ClamdError(f"clamd: unexpected reply {text[:200]!r}")


def instream_frames(payload: bytes, chunk_size: int = CHUNK_SIZE):
    """The bytes that send payload after zINSTREAM: length-prefixed chunks and the zero terminator."""
    view = memoryview(payload)
    for start in range(0, len(payload), chunk_size):
        chunk = view[start:start + chunk_size]
        yield struct.pack(">I", len(chunk))
        yield chunk
    yield struct.pack(">I", 0)


class Session:
    """One IDSESSION connection; commands are sent one at a time and answered in order."""

    def __init__(self, address: Address, timeout: float):
        self.pid = os.getpid()
        self.buffer = b""
        try:
            if address.path:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(address.path)
            else:
                self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
            self.sock.sendall(b"zIDSESSION\0")
        except OSError as exc:
            self.close()
            raise ClamdError(f"clamd at {address} unreachable: {exc}") from None

    def instream(self, payload: bytes) -> str | None:
        """Scan payload; the signature name or None. OSError/ClamdError when the session fails."""
        self.sock.sendall(b"zINSTREAM\0")
        for frame in instream_frames(payload):
            self.sock.sendall(frame)
        return parse_reply(self._read_reply())

    def _read_reply(self) -> bytes:
        while b"\0" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("clamd closed the connection")
            self.buffer += data
            if len(self.buffer) > MAX_REPLY:
                raise ClamdError("clamd: reply too long")
        reply, _, self.buffer = self.buffer.partition(b"\0")
        return reply

    def end(self) -> None:
        try:
            self.sock.sendall(b"zEND\0")
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class SessionPool:
    """Idle sessions for reuse; a session made in another process (before a fork) is never used."""

    def __init__(self, address: Address, timeout: float, size: int = IDLE_SESSIONS):
        self.address = address
        self.timeout = timeout
        self.size = size
        self.idle: list[Session] = []
        self.lock = threading.Lock()

    def take(self) -> tuple[Session, bool]:
        """(session, reused)."""
        with self.lock:
            while self.idle:
                session = self.idle.pop()
                if session.pid == os.getpid():
                    return session, True
                session.close()       # the parent's: only our copy of the descriptor goes
        return Session(self.address, self.timeout), False

    def give_back(self, session: Session) -> None:
        with self.lock:
            if session.pid == os.getpid() and len(self.idle) < self.size:
                self.idle.append(session)
                return
        session.end()

    def reset(self) -> None:
        """After a fork: drop the parent's sessions without talking on them (the parent still does);
        closing our copy of a descriptor leaves the parent's connection open."""
        self.lock = threading.Lock()
        idle, self.idle = self.idle, []
        for session in idle:
            session.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for session in idle:
            session.end()


class ClamdClient:
    """scan(payload) -> signature name or None, over pooled sessions, retrying once on a stale one."""

    def __init__(self, address: Address, timeout: float):
        self.address = address
        self.timeout = timeout
        self.pool = SessionPool(address, timeout)

    def scan(self, payload: bytes) -> str | None:
        for attempt in range(2):
            session, reused = self.pool.take()
            try:
                name = session.instream(payload)
            except StreamTooLarge:
                session.close()       # clamd closes the connection after this answer
                raise
            except (OSError, ClamdError) as exc:
                session.close()
                if reused and attempt == 0:
                    continue          # clamd may have closed an idle session (IdleTimeout)
                if isinstance(exc, ClamdError):
                    raise
                raise ClamdError(f"clamd at {self.address}: {exc}") from None
            self.pool.give_back(session)
            return name
        raise ClamdError(f"clamd at {self.address}: no answer")   # not reached: the loop returns or raises

    def ping(self) -> bool:
        """True when clamd answers PING with PONG (for check-config and tests)."""
        try:
            session = Session(self.address, self.timeout)
        except ClamdError:
            return False
        try:
            session.sock.sendall(b"zPING\0")
            return _SESSION_PREFIX.sub("", session._read_reply().decode("ascii", "replace")).strip() == "PONG"
        except (OSError, ClamdError):
            return False
        finally:
            session.end()


class ClamdEngine(AntivirusEngine):
    """Sends each decoded part (leaves, archive members, nested message parts) to clamd on its own."""

    backend = "clamd"
    blocking = True         # waits on clamd: prepare() runs in the engine pool, beside the others

    def __init__(self, options, address: Address, max_stream: int):
        super().__init__(options)
        self.max_stream = max_stream
        self.client = ClamdClient(address, options.timeout)

    def scan_parts(self, model) -> list[tuple]:
        found = []
        for part in model.parts:
            if not part.payload:
                continue
            where = "/".join(part.path) or "message"
            if len(part.payload) > self.max_stream:
                self._unscanned(model, f"{where}: {len(part.payload)} bytes is more than max_stream "
                                       f"({self.max_stream}); not sent to clamd")
                continue
            try:
                name = self.client.scan(part.payload)
            except StreamTooLarge:
                self._unscanned(model, f"{where}: longer than clamd's StreamMaxLength; not scanned")
                continue
            if name is not None:
                found.append((part.path, name, category_from_name(name)))
        return found

    @staticmethod
    def _unscanned(model, note: str) -> None:
        """A part clamd cannot take is not a failure of the message: it is flagged like any scanning limit,
        so `archive.limit_exceeded: true` rules see it, and noted for the logs."""
        log.info("antivirus: %s", note)
        model.notes.append("antivirus: " + note)
        model.flags.add(FLAG_ARCHIVE_LIMIT)

    def reset_after_fork(self) -> None:
        self.client.pool.reset()

    def close(self) -> None:
        self.client.pool.close()
