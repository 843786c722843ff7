"""The milter: libmilter callbacks → session state, and a verdict → milter replies and modifications.

No policy logic lives here: the Runtime scans, this module talks the milter
protocol. One ImssMilter object exists per SMTP connection (pymilter's
thread-per-connection model); it freezes the rule set it started with so a
reload never changes the rules under a message.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from email.header import Header

import Milter

from . import notify, rewrite
from .errors import StoreError
from .mime.headers import decode_rfc2047
from .policy.types import Verdict
from .session import Connection, MessageTooLarge, Spool, Transaction, parse_esmtp_params, strip_angle

log = logging.getLogger("imss_milter")

TEMPFAIL_REPLY = ("451", "4.3.0", "Temporary failure in message content filter, try again later")
TOO_LARGE_REPLY = ("552", "5.3.4", "Message size exceeds fixed maximum message size")
SHUTDOWN_REPLY = ("421", "4.3.2", "Service shutting down, try again later")
BODY_CHUNK = 65535          # libmilter sends a replaced body in pieces of at most this size
# ImssMilter negotiates P_HDR_LEADSPC (header values exactly as in the message), so the values it
# adds or changes must carry their own space after the colon, or the MTA writes "Name:value".
LEADING_SPACE = " "
# content conditions whose match is an IP Profiler event of the same name (sender/config PROFILER_KINDS)
PROFILED_CONDITIONS = frozenset({"virus", "spam"})


class _Activity:
    """Counts connections in this process, so a stopping worker can wait for them to finish."""

    def __init__(self):
        self._lock = threading.Condition()
        self.active = 0
        self.draining = False        # stopping: new connections are refused with 421, open ones finish

    def enter(self):
        with self._lock:
            self.active += 1

    def leave(self):
        with self._lock:
            self.active = max(0, self.active - 1)
            self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True


activity = _Activity()


def guarded(replies: bool, quiet_bit: int = 0):
    """Catch every exception of a callback: log it with the queue id and answer per on_error.

    Callbacks that send no reply (noreply, or quiet_bit negotiated for this
    connection) remember the failure; the end of message then answers per
    on_error, so one rule holds in one place.
    """

    def decorate(func):
        @functools.wraps(func)
        def wrapper(self, *args):
            try:
                return func(self, *args)
            except Exception as exc:   # noqa: BLE001 - a callback must never die
                self.log_exception(func.__name__, exc)
                if quiet_bit == Milter.P_NR_CONN and self.quiet(quiet_bit):
                    self.connect_failure = exc      # answered at MAIL FROM, the next stage that replies
                    return Milter.NOREPLY
                if not replies or self.quiet(quiet_bit):
                    self.failure = self.failure or exc
                    return self.proceed(quiet_bit) if replies else Milter.CONTINUE
                return self.internal_failure()
        return wrapper
    return decorate


@Milter.header_leading_space
class ImssMilter(Milter.Base):
    """One SMTP connection as seen by the milter."""

    runtime = None          # set by the daemon (or tests) before any connection

    def __init__(self):
        super().__init__()
        self.runtime = ImssMilter.runtime
        self.rules = self.runtime.rules          # frozen for this connection
        self.settings = self.runtime.settings
        self.connection = Connection()
        self.transaction: Transaction | None = None
        self.failure: Exception | None = None
        self.closed = False
        self._protocol = 0          # negotiated protocol bits (pymilter sets it in negotiate)
        self.connect_failure: Exception | None = None
        activity.enter()

    # -- negotiation ----------------------------------------------------------

    def negotiate(self, opts):
        """pymilter's negotiation, plus: no reply at CONNECT and RCPT TO when this connection has
        nothing to refuse there (no sender filtering, not shutting down). The MTA then sends the
        next command without waiting: a no-op milter answering those steps was 11% slower."""
        offered = opts[1]
        result = super().negotiate(opts)
        if result == Milter.CONTINUE and not self.refuses_before_data():
            opts[1] |= offered & (Milter.P_NR_CONN | Milter.P_NR_RCPT)
            self._protocol = opts[1]
        return result

    def refuses_before_data(self) -> bool:
        """Whether CONNECT or RCPT TO may be refused on this connection (MAIL FROM always may: SIZE)."""
        sender_filter = self.runtime.sender_filter
        return activity.draining or (sender_filter is not None and sender_filter.enabled)

    def quiet(self, bit: int) -> bool:
        """The MTA expects no reply at this stage (bit P_NR_CONN / P_NR_RCPT negotiated)."""
        return bool(bit and self._protocol & bit)

    def proceed(self, bit: int):
        """Go on to the next stage: CONTINUE, or NOREPLY where no reply was negotiated."""
        return Milter.NOREPLY if self.quiet(bit) else Milter.CONTINUE

    # -- logging ----------------------------------------------------------

    def queue_id(self) -> str | None:
        tx = self.transaction
        if tx is not None and tx.queue_id:
            return tx.queue_id
        try:
            qid = self.getsymval("i")
        except Exception:   # noqa: BLE001 - no context (tests) or no macro
            qid = None
        if qid and tx is not None:
            tx.queue_id = qid
        return qid

    def prefix(self) -> str:
        return f"{self.queue_id() or 'NOQUEUE'}: "

    def log_exception(self, stage: str, exc: Exception) -> None:
        log.error("%sinternal error in %s: %s", self.prefix(), stage, exc, exc_info=exc)
        self.runtime.count_error(stage)

    def internal_failure(self):
        """The answer to an internal failure: tempfail (MTA retries) unless on_error is accept."""
        if self.settings.milter.on_error == "accept":
            return Milter.ACCEPT
        self.setreply(*TEMPFAIL_REPLY)
        return Milter.TEMPFAIL

    def refuse(self, action: str, code: str, xcode: str, text: str):
        """Reply with a reject or tempfail carrying our text."""
        text = (text or "").replace("%", "%%")
        self.setreply(str(code), xcode, text)
        return Milter.REJECT if action == "reject" else Milter.TEMPFAIL

    def sender_filter(self):
        """The sender filter, unless there is none, no client IP, or the host is approved."""
        decision = self.connection.sender_decision
        if self.connection.client_ip is None or getattr(decision, "approved", False):
            return None
        return self.runtime.sender_filter

    # -- connection stage ---------------------------------------------------

    @guarded(replies=True, quiet_bit=Milter.P_NR_CONN)
    def connect(self, hostname, family, hostaddr):
        conn = self.connection
        if activity.draining and not self.quiet(Milter.P_NR_CONN):
            self.runtime.metrics.connection("shutdown")
            self.setreply(*SHUTDOWN_REPLY)
            return Milter.TEMPFAIL
        if isinstance(hostaddr, tuple) and hostaddr:
            conn.client_ip = str(hostaddr[0])
        if hostname and not hostname.startswith("[") and hostname != "unknown":
            conn.client_name = hostname
        sender_filter = self.runtime.sender_filter
        if sender_filter is None or not sender_filter.enabled or not conn.client_ip:
            # the sender filter counts the connections it judges; these it never sees
            self.runtime.metrics.connection("accepted")
        if sender_filter is not None and conn.client_ip:
            decision = sender_filter.check_connect(conn.client_ip, conn.client_name)
            conn.sender_decision = decision
            if decision.action in ("reject", "tempfail"):
                log.info("%sconnect from %s[%s] refused: %s", self.prefix(), conn.client_name or "unknown",
                         conn.client_ip, decision.reason)
                return self.refuse(decision.action, decision.code, decision.xcode, decision.text)
        return self.proceed(Milter.P_NR_CONN)

    @Milter.noreply
    @guarded(replies=False)
    def hello(self, heloname):
        self.connection.helo = heloname
        return Milter.CONTINUE

    # -- envelope stage -----------------------------------------------------

    @guarded(replies=True)
    def envfrom(self, mailfrom, *params):
        self.reset_transaction()
        if self.connect_failure is not None:
            return self.internal_failure()      # CONNECT failed where it could not answer
        milter_settings = self.settings.milter
        self.transaction = Transaction(
            spool=Spool(milter_settings.spool_memory_limit, milter_settings.max_message_size),
            sender=strip_angle(mailfrom),
            esmtp_params=parse_esmtp_params(params),
        )
        self.failure = None
        self.runtime.metrics.in_flight(1)
        self.transaction.in_flight = True
        declared = self.transaction.esmtp_params.get("SIZE")
        if declared and declared.isdigit() and milter_settings.max_message_size \
                and int(declared) > milter_settings.max_message_size:
            log.info("%sSIZE=%s over max_message_size %d: rejected at MAIL FROM",
                     self.prefix(), declared, milter_settings.max_message_size)
            return self.refuse("reject", *TOO_LARGE_REPLY)
        sender_filter = self.sender_filter()
        if sender_filter is not None:
            conn = self.connection
            if not self.transaction.sender:
                sender_filter.record(conn.client_ip, "bounce", conn.client_name)   # IP Profiler: bounces
            decision = sender_filter.check_sender(conn.client_ip, self.transaction.sender, conn.client_name)
            if decision.action in ("reject", "tempfail"):
                log.info("%ssender <%s> refused: %s", self.prefix(), self.transaction.sender, decision.reason)
                return self.refuse(decision.action, decision.code, decision.xcode, decision.text)
        return Milter.CONTINUE

    @guarded(replies=True, quiet_bit=Milter.P_NR_RCPT)
    def envrcpt(self, to, *params):
        tx = self.transaction
        recipient = strip_angle(to)
        sender_filter = self.sender_filter()
        if sender_filter is not None and not self.quiet(Milter.P_NR_RCPT):
            decision = sender_filter.check_recipient(self.connection.client_ip, recipient,
                                                     self.connection.client_name)
            if decision.action in ("reject", "tempfail"):
                log.info("%srecipient <%s> refused: %s", self.prefix(), recipient, decision.reason)
                tx.rejected_recipients.append(recipient)
                return self.refuse(decision.action, decision.code, decision.xcode, decision.text)
        tx.recipients.append(recipient)
        return self.proceed(Milter.P_NR_RCPT)

    # -- content stage ------------------------------------------------------

    @Milter.noreply
    @Milter.decode("bytes")
    @guarded(replies=False)
    def header(self, name, value):
        tx = self.transaction
        if isinstance(name, str):
            name = name.encode("utf-8", "surrogateescape")
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        tx.headers.append((name, value))
        self.spool_write(name + b":" + value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n")
        return Milter.CONTINUE

    @Milter.noreply
    @guarded(replies=False)
    def eoh(self):
        self.spool_write(b"\r\n")
        return Milter.CONTINUE

    @Milter.noreply
    @guarded(replies=False)
    def body(self, chunk):
        self.spool_write(chunk)
        return Milter.CONTINUE

    def spool_write(self, data: bytes) -> None:
        tx = self.transaction
        if tx.spool is None:           # already over the size limit: drop the rest
            return
        try:
            tx.spool.write(data)
        except MessageTooLarge:
            tx.spool.close()
            tx.spool = None

    @guarded(replies=True)
    def eom(self):
        try:
            return self.judge()
        finally:
            self.end_in_flight()

    def judge(self):
        """End of message: scan, keep the copies the verdict needs, reply and record."""
        tx = self.transaction
        self.queue_id()
        if self.failure is not None:
            return self.internal_failure()
        if tx.spool is None:
            log.info("%smessage over max_message_size %d: rejected", self.prefix(),
                     self.settings.milter.max_message_size)
            return self.refuse("reject", *TOO_LARGE_REPLY)
        raw = tx.spool.getvalue()
        envelope = tx.envelope(self.connection)
        started = time.perf_counter()
        result = self.runtime.scan(raw, envelope, rules=self.rules)
        verdict = result.verdict
        quarantine_id = None
        try:
            if verdict.action == "quarantine":
                quarantine_id = self.runtime.store.quarantine(
                    verdict.quarantine_area or "default", raw, envelope, result.model.subject,
                    verdict.rules, reason=verdict.deciding_rule or "", findings=verdict.findings)
            if verdict.action == "deliver":
                for mod in verdict.modifications:
                    if mod.kind == "archive":
                        self.runtime.store.quarantine(mod.args[0], raw, envelope, result.model.subject,
                                                      verdict.rules, reason="archive", kind="archive",
                                                      findings=verdict.findings)
                if any(mod.kind == "strip_attachments" for mod in verdict.modifications):
                    # the original, attachments and all, is kept before anything is removed from it
                    quarantine_id = self.runtime.store.quarantine(
                        "default", raw, envelope, result.model.subject, verdict.rules, reason="strip_attachments",
                        findings=verdict.findings)
        except StoreError as exc:
            # Nothing is discarded without its copy: the MTA keeps the message and retries.
            log.error("%scould not store the %s copy: %s; answering tempfail", self.prefix(),
                      verdict.action, exc)
            self.runtime.count_error("store")
            self.setreply(*TEMPFAIL_REPLY)
            self.runtime.record(envelope, result, "tempfail", time.perf_counter() - started,
                                size=len(raw), note=f"store failure: {exc}")
            return Milter.TEMPFAIL
        self.new_body = None
        if verdict.action == "deliver":
            self.new_body = self.rewrite_body(raw, verdict, quarantine_id)
        reply = self.apply(verdict, result)
        self.runtime.record(envelope, result, verdict.action, time.perf_counter() - started,
                            size=len(raw), quarantine_id=quarantine_id)
        self.profile_content(verdict)
        self.queue_notifications(envelope, result, verdict)
        return reply

    def profile_content(self, verdict: Verdict) -> None:
        """IP Profiler: a message in which a matched rule found a virus or spam counts once per kind
        against the client (approved hosts and connections without a sender filter never count)."""
        kinds = {finding.get("condition") for finding in verdict.findings} & PROFILED_CONDITIONS
        if not kinds:
            return
        sender_filter = self.sender_filter()
        if sender_filter is None:
            return
        conn = self.connection
        for kind in sorted(kinds):
            try:
                sender_filter.record(conn.client_ip, kind, conn.client_name)
            except Exception as exc:   # noqa: BLE001 - the verdict stands whatever the profiler does
                log.warning("%sIP Profiler could not count %s: %s", self.prefix(), kind, exc)
                self.runtime.count_error("profiler")

    def queue_notifications(self, envelope, result, verdict: Verdict) -> None:
        """Hand `notify` actions to the background sender (whatever the verdict: a notice that mail was
        held is the usual case). Mail that is itself a notification never causes one."""
        notices = [mod for mod in verdict.modifications if mod.kind == "notify"]
        if not notices:
            return
        if notify.is_notification(self.transaction.headers):
            log.info("%sno notification about a notification", self.prefix())
            return
        variables = notify.message_variables(envelope, result.model.subject, verdict, verdict.action)
        for mod in notices:
            targets, template = mod.args
            try:
                self.runtime.notifier.notify(targets, template, variables, envelope)
            except Exception as exc:   # noqa: BLE001 - a notification must never cost the message
                log.warning("%scould not queue a notification: %s", self.prefix(), exc)
                self.runtime.count_error("notify")

    def apply(self, verdict: Verdict, result):
        """Turn the verdict into the milter reply, applying modifications when delivering."""
        action = verdict.action
        if action == "reject":
            code, xcode, text = verdict.reply or ("550", "5.7.1", "Message rejected by policy")
            return self.refuse("reject", code, xcode, text)
        if action == "tempfail":
            code, xcode, text = verdict.reply or ("451", "4.7.1", "Message deferred by policy")
            return self.refuse("tempfail", code, xcode, text)
        if action in ("delete", "quarantine"):
            return Milter.DISCARD
        self.modify(verdict)
        return Milter.CONTINUE

    def rewrite_body(self, raw: bytes, verdict: Verdict, reference: str | None):
        """The body after insert_stamp/strip_attachments (a rewrite.Rewrite), or None to leave it alone.

        A stamp that cannot be added is skipped (the mail still goes); stripping that fails raises,
        so the message is answered per on_error rather than delivered with what had to be removed.
        """
        stamps = [mod.args[0] for mod in verdict.modifications if mod.kind == "insert_stamp"]
        strips = [mod.args for mod in verdict.modifications if mod.kind == "strip_attachments"]
        if not stamps and not strips:
            return None
        strip = None
        if strips:
            strip = () if any(not paths for paths in strips) else tuple(p for paths in strips for p in paths)
        stamp = "\n".join(dict.fromkeys(stamps)) or None
        try:
            change = rewrite.rewrite(raw, stamp=stamp, strip=strip, reference=reference)
        except Exception as exc:   # noqa: BLE001 - see the docstring
            if strip is not None:
                raise
            log.warning("%scould not insert the stamp: %s; delivering without it", self.prefix(), exc)
            self.runtime.count_error("stamp")
            return None
        if change is not None:
            for note in change.notes:
                log.info("%s%s", self.prefix(), note)
            if change.stripped:
                log.info("%sstripped %s (original kept as %s)", self.prefix(), ", ".join(change.stripped), reference)
        elif stamp:
            log.info("%sno text body to stamp (signed, encrypted or attachments only)", self.prefix())
        return change

    def replace_body(self, change) -> None:
        """Send the rewritten body and the top-level MIME headers that changed with it."""
        for name, value in change.headers.items():
            if value is None:
                self.chgheader(name, 1, None)
            elif self.has_header(name):
                self.chgheader(name, 1, LEADING_SPACE + value)
            else:
                self.addheader(name, LEADING_SPACE + value)
        body = change.body
        for offset in range(0, len(body), BODY_CHUNK):
            self.replacebody(body[offset:offset + BODY_CHUNK])
        if not body:
            self.replacebody(b"")

    def has_header(self, name: str) -> bool:
        wanted = name.lower().encode()
        return any(header.lower() == wanted for header, _ in self.transaction.headers)

    def modify(self, verdict: Verdict) -> None:
        """Apply the modifications of every matched policy through the milter protocol."""
        tx = self.transaction
        not_yet = set()
        for mod in verdict.modifications:
            if mod.kind == "add_header":
                name, value = mod.args
                self.addheader(name, LEADING_SPACE + encode_header_value(value))
            elif mod.kind == "tag_subject":
                self.tag_subject(mod.args[0], tx)
            elif mod.kind == "bcc":
                for address in mod.args:
                    self.addrcpt(f"<{address}>")
            elif mod.kind == "reroute":
                for recipient in tx.recipients:
                    self.delrcpt(f"<{recipient}>")
                for address in mod.args:
                    self.addrcpt(f"<{address}>")
            elif mod.kind in ("archive", "insert_stamp", "strip_attachments", "notify"):
                pass      # stored in eom / applied to the body below / queued after the verdict
            else:
                not_yet.add(mod.kind)
        if getattr(self, "new_body", None) is not None:
            self.replace_body(self.new_body)
        if not_yet:
            log.warning("%sactions not available in this version, skipped: %s",
                        self.prefix(), ", ".join(sorted(not_yet)))

    def tag_subject(self, prefix: str, tx: Transaction) -> None:
        """Prefix the Subject, keeping it a valid header whatever bytes the original had."""
        subjects = [value for name, value in tx.headers if name.lower() == b"subject"]
        if not subjects:
            self.addheader("Subject", LEADING_SPACE + encode_header_value(prefix.strip()))
            return
        raw = subjects[0].strip()
        text = decode_rfc2047(raw).strip()
        if text.startswith(prefix.strip()):
            return      # already tagged (e.g. by a previous pass)
        separator = "" if prefix.endswith(" ") else " "
        if raw.isascii() and b"=?" not in raw:
            value = prefix + separator + raw.decode("ascii")      # plain subject: keep it as it was
        else:
            # encoded words or raw 8-bit bytes: decode, then write one RFC 2047-encoded value
            value = encode_header_value(prefix + separator + text)
        self.chgheader("Subject", 1, LEADING_SPACE + value)

    # -- end of transaction / connection -----------------------------------

    def end_in_flight(self) -> None:
        """The message has its answer (or was abandoned): it leaves imss_messages_in_flight once."""
        tx = self.transaction
        if tx is not None and getattr(tx, "in_flight", False):
            tx.in_flight = False
            self.runtime.metrics.in_flight(-1)

    def reset_transaction(self) -> None:
        self.end_in_flight()
        if self.transaction is not None:
            if self.transaction.spool is not None:
                self.transaction.close()
            self.transaction = None

    @guarded(replies=True)
    def abort(self):
        self.reset_transaction()
        self.failure = None
        return Milter.CONTINUE

    def close(self):
        try:
            self.reset_transaction()
        finally:
            if not self.closed:
                self.closed = True
                activity.leave()
        return Milter.CONTINUE


def encode_header_value(value: str) -> str:
    """Header values the milter adds must be ASCII: non-ASCII text becomes RFC 2047 words."""
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        return Header(value, "utf-8").encode()
