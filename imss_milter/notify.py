"""Notification mail: templates, the `notifications:` config section and a background sending queue.

Milter callbacks only enqueue (Notifier.submit never blocks on the network);
a thread in each process sends through `notifications.smtp` and retries
temporary failures. Every notification is sent from the null sender with
`Auto-Submitted: auto-generated` and `X-IMSS-Notification: yes`, so no
notification ever produces a bounce or another notification (RFC 3834),
and none is sent to the null sender.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import smtplib
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .durable import fsync_dir
from .settings import (check_keys, located, parse_duration, require_int, require_mapping, require_str,
                       require_str_list)
from .yamlconf import fail

log = logging.getLogger("imss_milter")

MARK_HEADER = "X-IMSS-Notification"
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
PEOPLE = ("admin", "sender", "recipients")
# (event-log category, event) → the name admins use under notifications.events
EVENT_NAMES = {("sender", "block"): "ip-blocked", ("system", "update-failed"): "update-failed",
               ("system", "reload-failed"): "reload-failed"}

# Templates: "Subject: ..." line, blank line, body; $variables (string.Template), unknown ones left as is.
SHIPPED_TEMPLATES = {
    "default": """\
Subject: [imss-milter] $verdict: $subject

The mail gateway applied policy $rule to a message.

  Verdict:     $verdict
  Sender:      $sender
  Recipients:  $recipients
  Subject:     $subject
  Queue id:    $queue_id
  Rules:       $rules
  Findings:    $findings

Ask your mail administrator if you need this message.
""",
    "ip-blocked": """\
Subject: [imss-milter] client $ip blocked

The IP Profiler blocked $ip: $reason
Blocked until $until (action: $action).
Lift it with: imss-milter sender unblock $ip
""",
    "update-failed": """\
Subject: [imss-milter] update failed: $component

Updating $component failed: $error
The previous version stays in use.
""",
    "reload-failed": """\
Subject: [imss-milter] rule reload failed

The rule files could not be loaded, the previous rules stay in use:
$error
""",
}


@dataclass(frozen=True)
class EventNotice:
    to: tuple[str, ...]
    template: str


@dataclass(frozen=True)
class NotificationSettings:
    smtp: tuple[str, int] | None = None          # None: notifications are off (logged once per try)
    sender_header: str = "postmaster@localhost"   # the From: header (the envelope sender is always <>)
    admins: tuple[str, ...] = ()
    templates_dir: str | None = None
    retry_interval: float = 60.0
    max_attempts: int = 5
    events: dict = field(default_factory=dict)    # event name → EventNotice


def _targets(value, what, container, key) -> tuple[str, ...]:
    items = require_str_list(value, what, container, key)
    for index, item in enumerate(items):
        if item not in PEOPLE and not ADDRESS.match(item):
            here = (value, index) if isinstance(value, list) else (container, key)
            raise fail(f"{what}: expected admin, sender, recipients or an email address, got {item!r}", *here)
    return tuple(items)


def parse_notifications(section) -> NotificationSettings:
    """The `notifications:` section (SPEC §3); ConfigError with file:line on anything wrong."""
    if section is None:
        return NotificationSettings()
    from .settings import _host_port
    check_keys(section, ("smtp", "from", "admins", "templates_dir", "retry_interval", "max_attempts", "events"),
               "notifications")
    values: dict = {}
    if "smtp" in section:
        values["smtp"] = _host_port(section["smtp"], "notifications.smtp", section, "smtp")
    if "from" in section:
        sender = require_str(section["from"], "notifications.from", section, "from")
        if not ADDRESS.match(sender):
            raise fail(f"notifications.from: expected an email address, got {sender!r}", section, "from")
        values["sender_header"] = sender
    if "admins" in section:
        admins = require_str_list(section["admins"], "notifications.admins", section, "admins")
        for index, item in enumerate(admins):
            if not ADDRESS.match(item):
                here = (section["admins"], index) if isinstance(section["admins"], list) else (section, "admins")
                raise fail(f"notifications.admins: expected an email address, got {item!r}", *here)
        values["admins"] = tuple(admins)
    if "templates_dir" in section:
        path = require_str(section["templates_dir"], "notifications.templates_dir", section, "templates_dir")
        if not path.startswith("/"):
            raise fail(f"notifications.templates_dir: expected an absolute path, got {path!r}", section,
                       "templates_dir")
        values["templates_dir"] = path
    if "retry_interval" in section:
        values["retry_interval"] = located(parse_duration, section["retry_interval"],
                                           "notifications.retry_interval", section, "retry_interval")
    if "max_attempts" in section:
        values["max_attempts"] = require_int(section["max_attempts"], "notifications.max_attempts", section,
                                             "max_attempts", minimum=1)
    if "events" in section:
        table = require_mapping(section["events"], "notifications.events", section, "events")
        known = sorted(set(EVENT_NAMES.values()))
        events = {}
        for name, options in table.items():
            if name not in known:
                raise fail(f"notifications.events: unknown event {name!r}; expected one of: {', '.join(known)}",
                           table, name)
            options = require_mapping(options, f"notifications.events.{name}", table, name)
            check_keys(options, ("to", "template"), f"notifications.events.{name}")
            to = _targets(options.get("to", ["admin"]), f"notifications.events.{name}.to", options, "to")
            template = options.get("template", name)
            if not isinstance(template, str) or not TEMPLATE_NAME.match(template):
                raise fail(f"notifications.events.{name}.template: expected a template name, got {template!r}",
                           options, "template")
            events[name] = EventNotice(to, template)
        values["events"] = events
    return NotificationSettings(**values)


# -- templates ----------------------------------------------------------------------------

def load_template(name: str, templates_dir: str | None) -> str:
    """templates_dir/NAME.txt when it exists, else the shipped template; KeyError when neither does."""
    if templates_dir:
        path = os.path.join(templates_dir, name + ".txt")
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            pass
    return SHIPPED_TEMPLATES[name]


def render(template: str, variables: dict) -> tuple[str, str]:
    """(subject, body) of a template filled with variables; header-breaking characters are removed."""
    safe = {key: str(value) for key, value in variables.items()}
    text = string.Template(template).safe_substitute(safe)
    subject = "imss-milter notification"
    head, sep, body = text.partition("\n\n")
    if sep and head.lower().startswith("subject:"):
        subject = head.split(":", 1)[1]
    else:
        body = text
    subject = " ".join(subject.split())[:200]     # one line: a subject value can never add a header
    return subject, body


def message_variables(envelope, subject: str, verdict, action: str) -> dict:
    """The template variables of a message notification."""
    findings = sorted({str(f.get("detail") or f.get("condition") or "") for f in verdict.findings} - {""})
    return {
        "sender": envelope.sender or "<>",
        "recipients": ", ".join(envelope.recipients),
        "subject": subject,
        "rule": verdict.deciding_rule or (verdict.rules[0] if verdict.rules else ""),
        "rules": ", ".join(verdict.rules),
        "verdict": action,
        "queue_id": envelope.queue_id or "NOQUEUE",
        "client_ip": envelope.client_ip or "",
        "findings": "; ".join(findings)[:2000] or "-",
    }


def resolve_recipients(targets, admins, envelope=None) -> list[str]:
    """Addresses for admin/sender/recipients names; the null sender is never one."""
    found: list[str] = []
    for target in targets:
        if target == "admin":
            found.extend(admins)
        elif target == "sender":
            if envelope is not None and envelope.sender:
                found.append(envelope.sender)
        elif target == "recipients":
            found.extend(envelope.recipients if envelope is not None else [])
        else:
            found.append(target)
    return list(dict.fromkeys(a for a in found if a))


def is_notification(headers) -> bool:
    """True for mail that is itself automatic: ours (marked) or any Auto-Submitted other than 'no'."""
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        if name.lower() == MARK_HEADER.lower():
            return True
        if name.lower() == "auto-submitted" and value.strip().lower() not in ("", "no"):
            return True
    return False


# -- sending ------------------------------------------------------------------------------

@dataclass
class Notification:
    recipients: list[str]
    subject: str
    body: str
    attempts: int = 0
    not_before: float = 0.0


def build_message(note: Notification, sender_header: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender_header
    msg["To"] = ", ".join(note.recipients)
    msg["Subject"] = note.subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender_header.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg[MARK_HEADER] = "yes"
    msg.set_content(note.body)
    return msg


class Notifier:
    """Queue + sender thread for one process. submit() is safe from any thread and never blocks."""

    def __init__(self, settings: NotificationSettings, on_result=None, spool_dir: str | None = None):
        self.settings = settings
        self.on_result = on_result or (lambda result: None)     # metrics hook: sent | retry | failed | dropped
        # notifications still waiting for a retry when the process stops are kept here, one JSON
        # file each, and sent by the next process that starts (resume)
        self.spool_dir = spool_dir
        self._queue: queue.Queue = queue.Queue(maxsize=10000)
        self._thread: threading.Thread | None = None
        self._pid = None
        self._lock = threading.Lock()
        self._stopping = False

    # -- producing ----------------------------------------------------------------------

    def notify(self, targets, template: str, variables: dict, envelope=None) -> bool:
        """Render and enqueue one notification; False when there is nobody to send it to."""
        recipients = resolve_recipients(targets, self.settings.admins, envelope)
        if not recipients:
            return False
        try:
            text = load_template(template, self.settings.templates_dir)
        except (KeyError, OSError) as exc:
            log.error("notification template %r cannot be read (%s); using 'default'", template, exc)
            text = SHIPPED_TEMPLATES["default"]
        subject, body = render(text, variables)
        return self.submit(Notification(recipients, subject, body))

    def event(self, category: str, event: str, detail) -> bool:
        """Notify for an event-log event when notifications.events asks for it."""
        name = EVENT_NAMES.get((category, event))
        notice = self.settings.events.get(name) if name else None
        if notice is None:
            return False
        variables = {"event": name, **{k: v for k, v in (detail or {}).items() if isinstance(k, str)}}
        return self.notify(notice.to, notice.template, variables)

    def submit(self, note: Notification) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait(note)
            return True
        except queue.Full:
            log.error("notification queue full: dropping a notification to %s", ", ".join(note.recipients))
            self.on_result("dropped")
            return False

    def _ensure_thread(self) -> None:
        # threads do not survive fork: each worker starts its own sender on first use
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="imss-notify", daemon=True)
                self._thread.start()

    def resume(self) -> int:
        """Take over the notifications a stopped process left in spool_dir and send them now;
        returns how many. Each file goes to exactly one process (an atomic rename claims it)."""
        if not self.spool_dir:
            return 0
        try:
            names = sorted(name for name in os.listdir(self.spool_dir) if name.endswith(".json"))
        except FileNotFoundError:
            return 0
        taken = 0
        for name in names:
            path = os.path.join(self.spool_dir, name)
            claimed = f"{path}.{os.getpid()}.claimed"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue                    # another worker took it
            try:
                with open(claimed, encoding="utf-8") as handle:
                    data = json.load(handle)
                note = Notification([str(r) for r in data["recipients"]], str(data["subject"]),
                                    str(data["body"]), int(data.get("attempts", 0)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("notification spool file %s is unreadable (%s); kept as %s.bad", path, exc, path)
                os.replace(claimed, path + ".bad")
                continue
            if self.submit(note):
                taken += 1
                os.unlink(claimed)
            else:
                os.replace(claimed, path)   # queue full: leave it for the next start
        if taken:
            log.info("resumed %d notification(s) left by a stopped process", taken)
        return taken

    def _spool(self, notes: list[Notification]) -> int:
        """Write notes to spool_dir (fsynced, atomically named); returns how many were kept."""
        if not self.spool_dir or not notes:
            return 0
        kept = 0
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.error("cannot create the notification spool %s: %s", self.spool_dir, exc)
            return 0
        for number, note in enumerate(notes):
            name = f"{time.time():.6f}-{os.getpid()}-{number}.json"
            path = os.path.join(self.spool_dir, name)
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as handle:
                    json.dump({"recipients": note.recipients, "subject": note.subject, "body": note.body,
                               "attempts": note.attempts}, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.rename(path + ".tmp", path)
                kept += 1
            except OSError as exc:
                log.error("cannot keep a notification to %s in %s: %s", ", ".join(note.recipients),
                          self.spool_dir, exc)
        if kept:
            try:
                fsync_dir(self.spool_dir)       # the new names, not only the files' bytes
            except OSError as exc:
                log.warning("cannot fsync the notification spool %s: %s", self.spool_dir, exc)
        return kept

    # -- sending ------------------------------------------------------------------------

    def _run(self) -> None:
        waiting: list[Notification] = []
        while True:
            timeout = 0.5 if waiting else 1.0
            try:
                note = self._queue.get(timeout=timeout)
                if note is None:
                    break
                waiting.append(note)
            except queue.Empty:
                if self._stopping:
                    break
            now = time.monotonic()
            due = [n for n in waiting if n.not_before <= now]
            waiting = [n for n in waiting if n.not_before > now]
            for note in due:
                if not self._deliver(note):
                    waiting.append(note)
        while True:                 # whatever was queued behind the stop
            try:
                note = self._queue.get_nowait()
            except queue.Empty:
                break
            if note is not None:
                waiting.append(note)
        if waiting:
            kept = self._spool(waiting)
            if kept:
                log.info("stopping with %d notification(s) not sent yet: kept in %s for the next start",
                         kept, self.spool_dir)
            if kept < len(waiting):
                log.warning("stopping with %d notification(s) not sent", len(waiting) - kept)

    def _deliver(self, note: Notification) -> bool:
        """True when finished with note (sent or given up); False to retry later."""
        note.attempts += 1
        settings = self.settings
        if settings.smtp is None:
            log.warning("notification to %s not sent: notifications.smtp is not set", ", ".join(note.recipients))
            self.on_result("failed")
            return True
        host, port = settings.smtp
        try:
            with smtplib.SMTP(host, port, timeout=30) as client:
                refused = client.send_message(build_message(note, settings.sender_header), from_addr="",
                                              to_addrs=note.recipients)
            for address, reply in refused.items():
                log.warning("notification refused for %s: %s", address, reply)
            log.info("notification %r sent to %s", note.subject, ", ".join(note.recipients))
            self.on_result("sent")
            return True
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            error = f"{exc.smtp_code} {exc.smtp_error!r}"
        except smtplib.SMTPRecipientsRefused as exc:
            permanent = all(500 <= code < 600 for code, _ in exc.recipients.values())
            error = str(exc.recipients)
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            permanent = False
            error = str(exc) or type(exc).__name__
        if permanent or note.attempts >= settings.max_attempts:
            log.error("notification to %s failed after %d attempt(s): %s", ", ".join(note.recipients),
                      note.attempts, error)
            self.on_result("failed")
            return True
        log.warning("notification to %s failed (%s); retrying in %.0fs", ", ".join(note.recipients), error,
                    settings.retry_interval)
        self.on_result("retry")
        note.not_before = time.monotonic() + settings.retry_interval
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is due, then stop the thread; notifications still waiting for a retry go to
        spool_dir (without one they are logged and dropped)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        self._stopping = True
        self._queue.put(None)
        thread.join(timeout)
