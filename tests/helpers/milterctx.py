"""Drive ImssMilter through pymilter's Milter.testctx with raw message bytes.

TestCtx._feedFile re-parses messages with the email package, which would
repair exactly the malformed structure we want to test; feed_raw() splits
the raw header block itself and calls the callbacks in libmilter's order.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6

import Milter
from Milter.testctx import TestCtx

from imss_milter.milter import ImssMilter

RESULT_NAMES = {
    Milter.CONTINUE: "continue", Milter.ACCEPT: "accept", Milter.REJECT: "reject",
    Milter.TEMPFAIL: "tempfail", Milter.DISCARD: "discard", Milter.NOREPLY: "continue",
}


def split_headers(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """(name, value-with-leading-space) pairs and the body, as an MTA hands them to a milter."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(separator)
        if index >= 0:
            head, body = raw[:index], raw[index + len(separator):]
            break
    else:
        head, body = raw, b""
    headers: list[tuple[str, bytes]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        elif b":" in line:
            name, value = line.split(b":", 1)
            headers.append((name.decode("ascii", "replace"), value))
    return headers, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Outcome:
    result: str                              # continue | accept | reject | tempfail | discard
    stage: str                               # callback that gave the final answer
    reply: tuple | None = None               # (code, xcode, text) set with setreply
    added_headers: list = field(default_factory=list)
    changed_headers: list = field(default_factory=list)
    added_recipients: list = field(default_factory=list)
    deleted_recipients: list = field(default_factory=list)
    message: object = None                   # the message after modifications (email.message)


class RecordingCtx(TestCtx):
    """A TestCtx that records every modification the milter asks for."""

    def __init__(self):
        super().__init__()
        self.added = []
        self.changed = []

    def addheader(self, field, value, idx):
        self.added.append((field, value))
        return super().addheader(field, value, idx)

    def chgheader(self, field, idx, value):
        self.changed.append((field, idx, value))
        return super().chgheader(field, idx, value)

    def _negotiate(self):
        """TestCtx hands every connection its one class-level options list, which negotiation
        edits in place: each connection gets a fresh copy here, as from a real MTA."""
        shared = TestCtx.default_opts
        TestCtx.default_opts = list(shared)
        try:
            return super()._negotiate()
        finally:
            TestCtx.default_opts = shared

    def setreply(self, rcode, xcode, *msg):
        self._reply = (rcode, xcode) + tuple(msg)

    def _connect(self, host="localhost", helo="spamrelay", ip="1.2.3.4"):
        """Like TestCtx._connect, but as libmilter does it: hostaddr is an (ip, port) tuple, and a
        CONNECT or HELO without reply (NOREPLY) does not close the connection."""
        self._negotiate()
        family = AF_INET6 if ":" in ip else AF_INET
        self._stage = Milter.M_CONNECT
        rc = Milter.connect_callback(self, host, family, (ip, 40000))
        self._stage = None
        if rc == Milter.NOREPLY and not self._protocol & Milter.P_NR_CONN:
            raise AssertionError("NOREPLY at CONNECT without P_NR_CONN negotiated")
        if rc != Milter.NOREPLY and self._protocol & Milter.P_NR_CONN:
            raise AssertionError(f"a reply ({rc}) at CONNECT where none was negotiated")
        if rc not in (Milter.CONTINUE, Milter.NOREPLY):
            self._close()
            return rc
        self._stage = Milter.M_HELO
        rc = self._priv.hello(helo)
        self._stage = None
        if rc not in (Milter.CONTINUE, Milter.NOREPLY):
            self._close()
        return Milter.CONTINUE if rc == Milter.NOREPLY else rc


def run_message(raw: bytes, sender: str = "sender@example.org", recipients=("user@example.com",),
                ip: str = "192.0.2.10", hostname: str = "client.example.org", helo: str = "client.example.org",
                queue_id: str = "TESTQ1", extra_macros: dict | None = None) -> Outcome:
    """Feed one message through a fresh ImssMilter and report what it answered and changed."""
    ctx = RecordingCtx()
    ctx._setsymval("i", queue_id)
    for key, value in (extra_macros or {}).items():
        ctx._setsymval(key, value)
    previous_factory = Milter.factory
    Milter.factory = ImssMilter
    try:
        rc = ctx._connect(host=hostname, helo=helo, ip=ip)
        if RESULT_NAMES.get(rc) != "continue":
            return Outcome(RESULT_NAMES.get(rc, str(rc)), "connect", ctx._reply)
        headers, body = split_headers(raw)
        ctx._msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        ctx._body = None
        steps = [("envfrom", lambda: ctx._envfrom(f"<{sender}>"))]
        for rcpt in recipients:
            steps.append(("envrcpt", lambda r=rcpt: ctx._envrcpt(f"<{r}>")))
        steps.append(("data", ctx._data))
        for name, value in headers:
            steps.append(("header", lambda n=name, v=value: ctx._priv.header_bytes(n, v)))
        steps.append(("eoh", ctx._eoh))
        for offset in range(0, len(body), 65535):       # libmilter's largest body chunk
            steps.append(("body", lambda o=offset: ctx._priv.body(body[o:o + 65535])))
        steps.append(("eom", ctx._eom))
        for stage, step in steps:
            rc = step()
            if rc == Milter.NOREPLY and stage == "envrcpt" and not ctx._protocol & Milter.P_NR_RCPT:
                raise AssertionError("NOREPLY at RCPT TO without P_NR_RCPT negotiated")
            if rc != Milter.NOREPLY and stage == "envrcpt" and ctx._protocol & Milter.P_NR_RCPT:
                raise AssertionError(f"a reply ({rc}) at RCPT TO where none was negotiated")
            name = RESULT_NAMES.get(rc, str(rc))
            if stage == "envrcpt" and name == "reject":
                continue          # a refused recipient does not end the transaction
            if name != "continue":
                return Outcome(name, stage, ctx._reply, ctx.added, ctx.changed, ctx._addrcpt, ctx._delrcpt, ctx._msg)
        return Outcome("continue", "eom", ctx._reply, ctx.added, ctx.changed, ctx._addrcpt, ctx._delrcpt, ctx._msg)
    finally:
        ctx._close()
        Milter.factory = previous_factory
