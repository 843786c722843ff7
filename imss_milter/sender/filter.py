"""SenderFilter: the connect / MAIL FROM / RCPT TO decisions of sender filtering (SPEC §6), one per worker process.

It holds no per-connection state, so the milter's threads share one
instance; every backend it uses (DNS cache, state store, directory) is
thread-safe. Failures of DNS, Redis/SQLite or LDAP never stop mail unless
the admin chose `on_error: tempfail`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping

from .config import (DEFAULT_REPLIES, PROFILER_KINDS, DnsConfig, Reply, SenderConfig, parse_dns,
                     parse_sender_filtering)
from .directory import KNOWN, NOT_LOCAL, Directory, DirectoryUnavailable
from .dnsbl import DnsblChecker, LookupReport
from .lists import HostList, SenderList, normalize_address, normalize_ip
from .profiler import IPProfiler
from .state import Block, RedisState, SQLiteState, StateBackend, StateUnavailable

log = logging.getLogger(__name__)

EventLog = Callable[[str, str, dict], None]

ACTION_ORDER = {"reject": 3, "tempfail": 2, "tag": 1, "continue": 0}
STATE_FILE = "sender.sqlite"
_ERROR_LOG_INTERVAL = 10.0    # seconds between repeated error events of one kind (each error is still counted)


@dataclass
class SenderDecision:
    """What sender filtering decided at one SMTP stage.

    action: continue (go on; the default), reject / tempfail (answer with code xcode text),
    tag (continue, but rules may act on `categories` through sender.reputation). "accept" is
    reserved for the milter; approved hosts and senders give continue with approved=True,
    because approval skips sender filtering, not content scanning.
    """

    action: str = "continue"
    code: str = ""
    xcode: str = ""
    text: str = ""
    reason: str = ""
    categories: list[str] = field(default_factory=list)
    approved: bool = False

    @property
    def refuses(self) -> bool:
        return self.action in ("reject", "tempfail")

    @classmethod
    def from_reply(cls, reply: Reply, reason: str, categories=None) -> "SenderDecision":
        return cls(reply.action, reply.code, reply.xcode, reply.text, reason, list(categories or []))


CONTINUE = SenderDecision()
STATE_TEMPFAIL = Reply("tempfail", "451", "4.3.0", "Temporary sender-filtering failure, try again later")
DIRECTORY_TEMPFAIL = Reply("tempfail", "451", "4.3.0", "Recipient directory unavailable, try again later")
UNKNOWN_RECIPIENT = Reply("reject", "550", "5.1.1", "Recipient address rejected: User unknown")
BLOCKED_HOST = Reply("reject", "554", "5.7.1", "Access denied")
BLOCKED_SENDER = Reply("reject", "550", "5.7.1", "Sender address rejected: Access denied")


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def block_to_dict(block: Block) -> dict:
    """The CLI/JSON shape of a block: ip, reason, since, until (ISO 8601 UTC), plus kind and action."""
    return {"ip": block.ip, "reason": block.reason, "since": iso_time(block.since), "until": iso_time(block.until),
            "kind": block.kind, "action": block.action}


def make_state(config: SenderConfig, state_dir: str) -> StateBackend:
    """The configured counter/block store: SQLite in state_dir by default, or Redis."""
    state = config.state
    if state.backend == "redis":
        return RedisState(state.url, prefix=state.prefix, timeout=state.timeout)
    return SQLiteState(state.path or os.path.join(state_dir, STATE_FILE))


class SenderFilter:
    """Sender filtering for one worker process (thread-safe)."""

    def __init__(self, config: SenderConfig, dns: DnsConfig, state_dir: str, event_log: EventLog | None = None,
                 state: StateBackend | None = None, clock: Callable[[], float] = time.time):
        self.config = config
        self.dns = dns
        self.enabled = config.enabled
        self._event_log = event_log
        self._clock = clock
        self._stats: Counter = Counter()
        self._stats_lock = threading.Lock()
        self._last_error_event: dict[str, float] = {}
        self.approved_hosts = HostList.from_patterns(config.approved_hosts)
        self.blocked_hosts = HostList.from_patterns(config.blocked_hosts)
        self.approved_senders = SenderList.from_patterns(config.approved_senders)
        self.blocked_senders = SenderList.from_patterns(config.blocked_senders)
        self.dnsbl = DnsblChecker(config.zones, dns) if self.enabled and config.zones else None
        self.directory = Directory(config.directory) if self.enabled and config.directory else None
        self.state = state
        if self.state is None and self.enabled and config.profiler:
            self.state = make_state(config, state_dir)
        self.profiler = IPProfiler(config.profiler, self.state, clock) if self.state is not None else None

    @classmethod
    def from_config(cls, section: Mapping | None, dns: Mapping | None, state_dir: str,
                    event_log: EventLog | None = None) -> "SenderFilter":
        """Validate the sections (ConfigError with file:line) and build the filter; None → allows everything."""
        return cls(parse_sender_filtering(section), parse_dns(dns), state_dir, event_log)

    # --- bookkeeping ----------------------------------------------------------------------

    def _count(self, *key) -> None:
        with self._stats_lock:
            self._stats[key] += 1

    def stats(self) -> dict:
        """Counters for metrics: connections by result, DNS lookups by zone and result, errors, queries sent."""
        with self._stats_lock:
            snapshot = dict(self._stats)
        result: dict = {"connections": {}, "dns_lookups": {}, "errors": {}, "dns_queries": {}}
        for key, value in snapshot.items():
            if key[0] == "connections":
                result["connections"][key[1]] = value
            elif key[0] == "dns_lookups":
                result["dns_lookups"].setdefault(key[1], {})[key[2]] = value
            elif key[0] == "errors":
                result["errors"][key[1]] = value
        if self.dnsbl is not None:
            result["dns_queries"] = {zone: self.dnsbl.queries_sent(zone) for zone in self.dnsbl.resolvers}
        return result

    def _log(self, event: str, detail: dict) -> None:
        if self._event_log is None:
            return
        try:
            self._event_log("sender", event, detail)
        except Exception:       # a full disk in the log store must not turn into refused mail
            log.exception("sender filtering: cannot write the %s event", event)

    def _log_error(self, kind: str, key: str, detail: dict) -> None:
        """Count every error; write a log line and an event at most every few seconds per key."""
        self._count("errors", kind)
        now = time.monotonic()
        with self._stats_lock:
            last = self._last_error_event.get(key)
            if last is not None and now - last < _ERROR_LOG_INTERVAL:
                return
            self._last_error_event[key] = now
        log.warning("sender filtering %s: %s", kind, detail.get("error"))
        self._log(kind, detail)

    def _decide(self, stage: str, event: str, decision: SenderDecision, detail: dict) -> SenderDecision:
        self._log(event, {"stage": stage, "action": decision.action, "reason": decision.reason,
                          "code": decision.code, "xcode": decision.xcode, "categories": decision.categories,
                          **detail})
        return decision

    def _approved_host(self, ip: str, hostname: str | None) -> str | None:
        return self.approved_hosts.match(ip, hostname) if self.approved_hosts else None

    def _state_failure(self, stage: str, ip: str, exc: Exception) -> SenderDecision | None:
        self._log_error("state_error", "state", {"stage": stage, "ip": ip, "error": str(exc)})
        if self.config.state.on_error == "tempfail":
            return SenderDecision.from_reply(STATE_TEMPFAIL, f"state_error: {exc}")
        return None

    def _block_decision(self, block: Block) -> SenderDecision:
        rule = self.config.profiler.get(block.kind)
        reply = rule.reply if rule is not None else DEFAULT_REPLIES.get(block.action, DEFAULT_REPLIES["tempfail"])
        return SenderDecision.from_reply(reply, f"{block.reason}, blocked until {iso_time(block.until)}")

    # --- connect --------------------------------------------------------------------------

    def check_connect(self, ip: str, hostname: str | None = None) -> SenderDecision:
        """Hosts lists, IP Profiler blocks, then DNSBL zones (in parallel, cached)."""
        if not self.enabled:
            return CONTINUE
        detail = {"ip": ip, "hostname": hostname}
        pattern = self._approved_host(ip, hostname)
        if pattern is not None:
            self._count("connections", "approved-host")
            return SenderDecision(reason=f"approved_host:{pattern}", approved=True)
        pattern = self.blocked_hosts.match(ip, hostname) if self.blocked_hosts else None
        if pattern is not None:
            self._count("connections", "blocked-host")
            decision = SenderDecision.from_reply(BLOCKED_HOST, f"blocked_host:{pattern}")
            return self._decide("connect", "blocked_host", decision, {**detail, "rule": f"blocked_hosts:{pattern}"})
        address = normalize_ip(ip)
        if address is None:
            # a local (unix socket) or otherwise address-less client: nothing to look up
            self._count("connections", "accepted")
            return CONTINUE
        if self.profiler is not None:
            try:
                block = self.profiler.current_block(str(address))
            except StateUnavailable as exc:
                failure = self._state_failure("connect", ip, exc)
                if failure is not None:
                    self._count("connections", "state-error")
                    return failure
                block = None
            if block is not None:
                self._count("connections", "ip-profiler")
                return self._decide("connect", "ip_profiler", self._block_decision(block),
                                    {**detail, "rule": f"ip_profiler:{block.kind}", "until": iso_time(block.until)})
        if self.dnsbl is not None:
            decision = self._dnsbl_decision(ip, self.dnsbl.check(str(address)), detail)
            if decision is not None:
                return decision
        self._count("connections", "accepted")
        return CONTINUE

    def _dnsbl_decision(self, ip: str, report: LookupReport, detail: dict) -> SenderDecision | None:
        replies = {zone.zone: zone.reply for zone in self.config.zones}
        for result in report.results:
            if result.cached:
                self._count("dns_lookups", result.zone, "cached")
            else:
                self._count("dns_lookups", result.zone, result.status)
            if result.status == "error" and not result.cached:
                self._log_error("dns_error", f"dns:{result.zone}",
                                {"zone": result.zone, "ip": ip, "error": result.error})
        listed = report.listed
        if not listed:
            return None
        categories: list[str] = []
        for result in listed:
            categories.extend(c for c in result.categories if c not in categories)
        # the strongest zone action wins; among equals, the first zone in the config
        deciding = max(listed, key=lambda r: ACTION_ORDER[replies[r.zone].action])
        reply = replies[deciding.zone]
        reason = f"dnsbl:{deciding.zone} {','.join(deciding.addresses)} {','.join(deciding.categories)}"
        self._count("connections", "dnsbl" if reply.action != "tag" else "accepted")
        decision = SenderDecision.from_reply(reply, reason, categories)
        zones = {r.zone: {"answers": list(r.addresses), "categories": list(r.categories)} for r in listed}
        return self._decide("connect", "dnsbl", decision, {**detail, "rule": f"dnsbl:{deciding.zone}",
                                                           "zone": deciding.zone, "listings": zones})

    # --- MAIL FROM ------------------------------------------------------------------------

    def check_sender(self, ip: str, sender: str, hostname: str | None = None) -> SenderDecision:
        """Approved/blocked senders (address and domain globs); an approved host skips them."""
        if not self.enabled:
            return CONTINUE
        pattern = self._approved_host(ip, hostname)
        if pattern is not None:
            return SenderDecision(reason=f"approved_host:{pattern}", approved=True)
        pattern = self.approved_senders.match(sender) if self.approved_senders else None
        if pattern is not None:
            return SenderDecision(reason=f"approved_sender:{pattern}", approved=True)
        pattern = self.blocked_senders.match(sender) if self.blocked_senders else None
        if pattern is not None:
            decision = SenderDecision.from_reply(BLOCKED_SENDER, f"blocked_sender:{pattern}")
            return self._decide("mail", "blocked_sender", decision,
                                {"ip": ip, "sender": normalize_address(sender), "rule": f"blocked_senders:{pattern}"})
        return CONTINUE

    # --- RCPT TO --------------------------------------------------------------------------

    def check_recipient(self, ip: str, rcpt: str, hostname: str | None = None) -> SenderDecision:
        """DHA: a recipient the directory does not know gets 550 5.1.1 and counts against the client IP."""
        if not self.enabled or self.directory is None:
            return CONTINUE
        pattern = self._approved_host(ip, hostname)
        if pattern is not None:
            return SenderDecision(reason=f"approved_host:{pattern}", approved=True)
        address = normalize_ip(ip)
        recipient = normalize_address(rcpt)
        detail = {"ip": ip, "recipient": recipient}
        if address is not None and self.profiler is not None and "dha" in self.config.profiler:
            # a client blocked during this connection (here or on another gateway) stops probing now
            try:
                block = self.profiler.current_block(str(address))
            except StateUnavailable as exc:
                failure = self._state_failure("rcpt", ip, exc)
                if failure is not None:
                    return failure
                block = None
            if block is not None:
                return self._decide("rcpt", "ip_profiler", self._block_decision(block),
                                    {**detail, "rule": f"ip_profiler:{block.kind}"})
        try:
            status = self.directory.lookup(recipient)
        except Exception as exc:   # DirectoryUnavailable, or a client-library bug: never a crash, never a 550
            if not isinstance(exc, DirectoryUnavailable):
                log.exception("recipient directory lookup failed")
            self._log_error("directory_error", "directory", {"ip": ip, "recipient": recipient, "error": str(exc)})
            if self.config.directory.on_error == "tempfail":
                return SenderDecision.from_reply(DIRECTORY_TEMPFAIL, f"directory_error: {exc}")
            return CONTINUE
        if status in (KNOWN, NOT_LOCAL):
            return CONTINUE
        reason = "dha:unknown recipient"
        blocked_now = self._record(ip, "dha", "rcpt")
        if blocked_now is not None:
            reason += f"; {blocked_now.reason}, client blocked until {iso_time(blocked_now.until)}"
        decision = SenderDecision.from_reply(UNKNOWN_RECIPIENT, reason)
        return self._decide("rcpt", "dha", decision, {**detail, "rule": "directory"})

    # --- IP Profiler hook and administration -------------------------------------------------

    def _record(self, ip: str, kind: str, stage: str) -> Block | None:
        address = normalize_ip(ip)
        if address is None or self.profiler is None or kind not in self.config.profiler:
            return None
        try:
            block = self.profiler.record(str(address), kind)
        except StateUnavailable as exc:
            self._state_failure(stage, ip, exc)
            return None
        if block is not None:
            self._log("block", {"stage": stage, "ip": block.ip, "kind": kind, "reason": block.reason,
                                "action": block.action, "since": iso_time(block.since),
                                "until": iso_time(block.until), "rule": f"ip_profiler:{kind}"})
        return block

    def record(self, ip: str, kind: str, hostname: str | None = None) -> bool:
        """Count one dha/bounce/spam/virus event for the client IP (engines call this); True if it is now blocked."""
        if kind not in PROFILER_KINDS:
            raise ValueError(f"unknown IP Profiler event kind {kind!r} (expected one of {', '.join(PROFILER_KINDS)})")
        if not self.enabled or self._approved_host(ip, hostname) is not None:
            return False      # approved hosts are never counted, so never blocked
        return self._record(ip, kind, "engine") is not None

    def blocked(self) -> list[dict]:
        """Blocks in force: [{ip, reason, since, until, kind, action}], oldest first."""
        if self.profiler is None:
            return []
        return [block_to_dict(block) for block in self.profiler.blocked()]

    def unblock(self, ip: str) -> bool:
        """Lift the block on ip (and forget its counters); False when it was not blocked."""
        address = normalize_ip(ip)
        if address is None or self.profiler is None:
            return False
        removed = self.profiler.unblock(str(address))
        if removed:
            self._log("unblock", {"ip": str(address)})
        return removed

    def close(self) -> None:
        if self.dnsbl is not None:
            self.dnsbl.close()
        if self.state is not None:
            self.state.close()
