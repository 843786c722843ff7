"""The scanning pipeline and the swappable rule set that the milter, `scan` and the daemon share.

A Runtime holds what one process needs to judge messages: settings, the
current RuleSet (replaced atomically on reload; each connection keeps the
one it started with), the store, and the optional sender filter.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from .engines import build_engines
from .engines.dlp import DlpEngine, load_dlp_patterns
from .errors import ImssError
from .metrics import NullMetrics
from .mime import parse_message
from .mime.model import MessageModel
from .notify import Notifier, parse_notifications
from .policy import compile_rules, read_rule_sources
from .policy.conditions import engine_condition_warnings
from .policy.types import Envelope, Verdict
from .sender import SenderFilter
from .sender.config import parse_dns, parse_sender_filtering
from .sender.reputation import ReputationEngine

log = logging.getLogger("imss_milter")


class ScanError(ImssError):
    """The scanner failed internally: the verdict would be unreliable, so the milter answers per on_error."""

    default_message = "internal scanning error"


@dataclass
class ScanResult:
    model: MessageModel
    verdict: Verdict
    direction: str
    timings: dict = field(default_factory=dict)   # stage → seconds


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def is_internal(address: str, internal_domains) -> bool:
    """True when address is in one of internal_domains or a subdomain of one."""
    domain = domain_of(address)
    if not domain:
        return False
    for internal in internal_domains:
        internal = internal.lower().lstrip("*.").rstrip(".")
        if domain == internal or domain.endswith("." + internal):
            return True
    return False


def direction_of(envelope: Envelope, internal_domains) -> str:
    """inbound | outbound | internal, from the envelope and internal_domains (SPEC §3)."""
    if not internal_domains:
        return "inbound"
    sender_internal = bool(envelope.sender) and is_internal(envelope.sender, internal_domains)
    recipients_internal = bool(envelope.recipients) and all(
        is_internal(r, internal_domains) for r in envelope.recipients)
    if sender_internal:
        return "internal" if recipients_internal else "outbound"
    return "inbound"


class EngineTimeout(Exception):
    """An engine's prepare() did not finish within its timeout."""


class TimedEngine:
    """An engine as one message's policy evaluation sees it: the time of each check is added to
    timings[stage] and each exception is counted, so imss_scan_seconds has a stage per engine
    (engines run lazily, inside policy evaluation) and imss_engine_errors_total{engine} counts.

    A failure (also one its prepare() left in scratch) propagates, so the milter answers per
    milter.on_error, unless the engine's own on_error is accept: then its conditions do not hold
    and the failure is logged once per message."""

    def __init__(self, engine, stage: str, on_error):
        self.engine = engine
        self.stage = stage
        self.on_error = on_error

    def check(self, condition: str, argument, model, envelope, scratch: dict):
        started = time.perf_counter()
        try:
            failed = scratch.get((PREPARE_ERROR, self.stage))
            if failed is not None:
                raise failed
            return self.engine.check(condition, argument, model, envelope, scratch)
        except Exception as exc:
            options = getattr(self.engine, "options", None)
            if getattr(options, "on_error", "tempfail") != "accept":
                if (PREPARE_ERROR, self.stage) not in scratch:
                    self.on_error(self.stage)
                raise
            if (ACCEPTED_ERROR, self.stage) not in scratch:
                scratch[(ACCEPTED_ERROR, self.stage)] = exc
                self.on_error(self.stage)
                log.warning("%s: engine %s failed (%s); on_error is accept: its conditions do not hold",
                            envelope.queue_id or "NOQUEUE", self.stage, exc)
            return []
        finally:
            timings = scratch[TIMINGS]
            timings[self.stage] = timings.get(self.stage, 0.0) + (time.perf_counter() - started)

    def __getattr__(self, name):
        return getattr(self.engine, name)


UNDELIVERED = ("reject", "tempfail", "delete", "quarantine")
TIMINGS = "timings"                 # scratch key: the message's seconds per stage
PREPARE_ERROR = "prepare-error"
ACCEPTED_ERROR = "accepted-error"
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def engine_pool() -> ThreadPoolExecutor:
    """This process's pool for engines' prepare() (made after fork: threads do not survive one)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=16, thread_name_prefix="imss-engine"))
        return _pool[1]


def prepare_engines(engines: dict, needed, model, envelope, scratch: dict, timings: dict) -> None:
    """Run prepare() of the needed engines that have one, each within its timeout.

    Engines that wait on a service (`blocking`: clamd, rspamd, DNS) run in the engine pool, so
    their waits overlap; CPU-bound built-in engines run in the calling thread, where a pool hand-off
    would only add work (they hold the interpreter lock; YARA and hashing release it themselves).
    A failure is kept in scratch and raised when a condition asks that engine (TimedEngine), so a
    rule that does not depend on the engine's answer is not held up by it."""
    jobs = [(name, engines[name]) for name in sorted(needed)
            if name in engines and hasattr(engines[name], "prepare")]
    if not jobs:
        return

    def run(name, engine):
        started = time.perf_counter()
        try:
            engine.prepare(model, envelope, scratch)
        finally:
            timings[name] = timings.get(name, 0.0) + (time.perf_counter() - started)

    waiting = [(name, engine) for name, engine in jobs if getattr(engine, "blocking", False)]
    if len(waiting) < 2:
        waiting = []          # a single service wait overlaps with nothing: no hand-off either
    futures = [(name, engine, engine_pool().submit(run, name, engine)) for name, engine in waiting]
    for name, engine in jobs:
        if any(name == queued for queued, _ in waiting):
            continue
        try:
            run(name, engine)
        except Exception as exc:   # noqa: BLE001 - answered when a condition asks (TimedEngine)
            scratch[(PREPARE_ERROR, name)] = exc
    for name, engine, future in futures:
        timeout = getattr(getattr(engine, "options", None), "timeout", None)
        try:
            future.result(timeout=timeout)
        except FutureTimeout:
            scratch[(PREPARE_ERROR, name)] = EngineTimeout(f"engine {name} took longer than {timeout:g}s")
        except Exception as exc:   # noqa: BLE001 - answered when a condition asks (TimedEngine)
            scratch[(PREPARE_ERROR, name)] = exc


@functools.lru_cache(maxsize=256)
def with_used(needed: frozenset, uses: tuple) -> frozenset:
    """needed, plus the engines whose findings a needed engine reads (spam reads url's)."""
    result = set(needed)
    for name, used in uses:
        if name in needed:
            result.update(used)
    return frozenset(result)


class Runtime:
    """Everything one process needs to scan: settings, rules, store, sender filter."""

    def __init__(self, settings, rules=None, store=None, sender_filter=None):
        self.settings = settings
        self._store = store
        self._store_lock = threading.Lock()
        # engines that read no pattern files; the pattern engines (engines section: antivirus, spam,
        # url) are built with each rule set, so a reload or an update swaps rules and patterns together
        self.engines: dict = {"dlp": DlpEngine()}
        self._engine_maps: dict[int, tuple] = {}      # id(rule set) -> (rule set, timed engines, uses, own engines)
        self._engine_maps_lock = threading.Lock()
        self.generation = 0
        self.errors: dict[str, int] = {}
        self.metrics = NullMetrics()     # the daemon swaps in prometheus metrics when metrics.listen is set
        # validated here so a bad notifications section stops start-up (and check-config) with file:line
        self.notifier = Notifier(parse_notifications(settings.raw.get("notifications")),
                                 on_result=lambda result: self.metrics.notification(result),
                                 spool_dir=os.path.join(settings.state_dir, "notifications"))
        self._log_queue: queue.Queue | None = None
        self._log_thread: threading.Thread | None = None
        # Built here so a bad sender_filtering/dns section stops start-up with file:line.
        if sender_filter is False:      # validating only: check the sections, open no state
            self.sender_filter = None
            self.build_sender_filter(validate_only=True)
        else:
            self.sender_filter = sender_filter if sender_filter is not None else self.build_sender_filter()
        if self.sender_filter is not None and self.sender_filter.enabled:
            self.engines["sender_reputation"] = ReputationEngine()
        if rules is not None and not rules.engines:
            rules.engines = build_engines(settings)
        self._rules = rules if rules is not None else self.load_rules()

    def build_sender_filter(self, validate_only: bool = False):
        """The sender filter of the config's sender_filtering/dns sections; None when absent."""
        section = self.settings.raw.get("sender_filtering")
        if section is None:
            return None
        if validate_only:
            parse_dns(self.settings.raw.get("dns"))
            if parse_sender_filtering(section).enabled:
                self.engines["sender_reputation"] = ReputationEngine()
            return None
        return SenderFilter.from_config(section, self.settings.raw.get("dns"), self.settings.state_dir,
                                        event_log=self.sender_event)

    def sender_event(self, category: str, event: str, detail: dict) -> None:
        self.event(category, event, detail, rule=(detail or {}).get("rule"))

    # -- rules -----------------------------------------------------------

    def read_rules(self) -> list[tuple[str, str]]:
        """The rule files' (path, text), read once (ConfigError if unreadable)."""
        return read_rule_sources(self.settings.rules_dir)

    def load_rules(self, sources=None):
        """Compile the rule files (or the given sources) over the DLP pattern files; raises ConfigError."""
        if sources is None:
            sources = self.read_rules()
        # read at every (re)load: an updated pattern set is picked up with the rules
        dlp_patterns = load_dlp_patterns(self.settings.patterns_dir)
        pattern_engines = build_engines(self.settings)
        rules = compile_rules(sources, internal_domains=self.settings.internal_domains,
                              limits=self.settings.limits, engines=[*self.engines, *pattern_engines],
                              dlp_patterns=dlp_patterns)
        rules.engines = pattern_engines
        # conditions asking for what no configured engine can report (a misspelt URL category)
        rules.warnings += engine_condition_warnings(rules.policies, {**self.engines, **pattern_engines})
        return rules

    @property
    def rules(self):
        return self._rules

    def reload(self, sources=None) -> bool:
        """Swap in freshly loaded rules (or these sources); on any error keep the old ones and say why."""
        try:
            new_rules = self.load_rules(sources)
        except ImssError as exc:
            log.error("reload failed, keeping the previous rules: %s", exc)
            self.event("system", "reload-failed", {"error": str(exc)})
            return False
        self._rules = new_rules      # one reference assignment: atomic for readers
        self.generation += 1
        log.info("rules reloaded (generation %d)", self.generation)
        self.event("system", "reload", {"generation": self.generation})
        return True

    def reset_after_fork(self) -> None:
        """In a freshly forked worker: never share the parent's database connections or locks."""
        self._store = None
        self._store_lock = threading.Lock()
        for engine in [*self.engines.values(), *self._rules.engines.values()]:
            reset = getattr(engine, "reset_after_fork", None)
            if reset is not None:
                reset()          # connections (clamd, DNS pools) belong to the parent
        if self.sender_filter is not None:
            # its SQLite connections and DNS thread pool belong to the parent: build our own
            self.sender_filter = self.build_sender_filter()

    # -- store -----------------------------------------------------------

    @property
    def store(self):
        """The store, opened on first use (after fork, in the process that uses it)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    from .store import Store
                    self._store = Store(self.settings.state_dir)
        return self._store

    def event(self, category: str, event: str, detail=None, queue_id=None, rule=None) -> None:
        """Record an event (and notify about it when configured); a failing log store must never
        stop mail, so errors are only logged."""
        if self._store is False:      # scan / check-config: no store wanted
            return
        try:
            self.notifier.event(category, event, detail)
        except Exception as exc:   # noqa: BLE001 - a notification must not break the caller
            log.warning("could not queue a notification for %s event %s: %s", category, event, exc)
        try:
            self.store.log_event(category, event, detail, queue_id=queue_id, rule=rule)
        except Exception as exc:   # noqa: BLE001 - logging must not break the caller
            log.warning("could not record %s event %s: %s", category, event, exc)

    # -- scanning ----------------------------------------------------------

    def scan(self, raw: bytes, envelope: Envelope, rules=None) -> ScanResult:
        """Parse raw bytes and evaluate the rules: the whole content decision for one message."""
        rules = rules if rules is not None else self._rules
        timings = {}
        started = time.perf_counter()
        model = parse_message(raw, self.settings.limits)
        errors = getattr(model, "errors", None)
        if errors:
            self.metrics.engine_error("mime")
            # A scanner failure (not bad input) means parts went unscanned: never a verdict on that.
            raise ScanError("scanner failed: " + "; ".join(errors[:3]))
        parsed = time.perf_counter()
        timings["parse"] = parsed - started
        engines, uses = self._engines_of(rules)
        # "message.raw": for engines that want the original bytes (raw rules, rspamd)
        scratch: dict = {"message.raw": raw, TIMINGS: timings}
        routed = rules.routed(envelope)
        needed = with_used(frozenset(rules.engines_for(envelope, routed)), uses)
        prepare_engines(engines, needed, model, envelope, scratch, timings)
        verdict = rules.evaluate(envelope, model, engines, scratch=scratch, routed=routed)
        if verdict.action not in UNDELIVERED:
            # engines may change a delivered message themselves (the spam score header)
            for name in sorted(needed & engines.keys()):
                extra = getattr(engines[name].engine, "modifications", None)
                if extra is not None:
                    verdict.modifications += list(extra(scratch))
        # engines ran inside the evaluation: their stages are theirs, "policy" is what is left
        engine_seconds = sum(seconds for stage, seconds in timings.items() if stage != "parse")
        timings["policy"] = max(0.0, time.perf_counter() - parsed - engine_seconds)
        return ScanResult(model=model, verdict=verdict,
                          direction=direction_of(envelope, self.settings.internal_domains),
                          timings=timings)

    def _engines_of(self, rules) -> tuple[dict[str, TimedEngine], tuple]:
        """The engines a message judged by `rules` is scanned with, each wrapped to time and count
        its checks, and (engine, engines whose findings it reads) pairs; built once per rule set
        (a reload or an update brings a new one)."""
        own = tuple(self.engines.items())       # sender_reputation comes and goes with reloads
        found = self._engine_maps.get(id(rules))
        if found is not None and found[0] is rules and len(found[3]) == len(own) \
                and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(found[3], own)):
            return found[1], found[2]
        # the DLP engine reads the templates of the rule set judging the message
        engines = {**rules.engines, **self.engines, "dlp": self.engines["dlp"].for_rules(rules)}
        timed = {name: TimedEngine(engine, name, self._engine_error) for name, engine in engines.items()}
        uses = tuple((name, tuple(engine.uses)) for name, engine in engines.items()
                     if getattr(engine, "uses", None))
        with self._engine_maps_lock:
            while len(self._engine_maps) >= 4:     # the rule sets of the last reloads
                self._engine_maps.pop(next(iter(self._engine_maps)))
            self._engine_maps[id(rules)] = (rules, timed, uses, own)
        return timed, uses

    def _engine_error(self, stage: str) -> None:
        self.metrics.engine_error(stage)       # looked up per call: the daemon swaps metrics in

    # -- accounting ----------------------------------------------------------

    def count_error(self, stage: str) -> None:
        """An internal error in a milter callback or the store (counted for imss_milter_errors_total)."""
        self.errors[stage] = self.errors.get(stage, 0) + 1
        self.metrics.milter_error(stage)

    def record(self, envelope: Envelope, result: ScanResult, action: str, seconds: float,
               size: int, quarantine_id: str | None = None, note: str | None = None) -> None:
        """Log one line per message (with the queue id) and store its tracking record."""
        verdict = result.verdict
        qid = envelope.queue_id or "NOQUEUE"
        try:
            self.metrics.message(action, result.direction, verdict.rules, result.timings)
        except Exception as exc:   # noqa: BLE001 - metrics must never cost a message
            log.warning("%s: could not count the message in metrics: %s", qid, exc)
        log.info("%s: verdict=%s rules=%s from=<%s> to=%s size=%d direction=%s time=%.1fms%s%s",
                 qid, action, ",".join(verdict.rules) or "-", envelope.sender,
                 ",".join(f"<{r}>" for r in envelope.recipients), size, result.direction,
                 seconds * 1000, f" quarantine={quarantine_id}" if quarantine_id else "",
                 f" note={note}" if note else "")
        record = {
            "time": time.time(),
            "queue_id": envelope.queue_id,
            "client_ip": envelope.client_ip,
            "client_name": envelope.client_name,
            "helo": envelope.helo,
            "sender": envelope.sender,
            "recipients": list(envelope.recipients),
            "subject": result.model.subject,
            "size": size,
            "direction": result.direction,
            "verdict": action,
            "rules": list(verdict.rules),
            "findings": verdict.findings,
            "duration_ms": round(seconds * 1000, 3),
            "quarantine_id": quarantine_id,
        }
        if note:
            record["note"] = note
        pending = self._log_queue
        if pending is not None:
            # Appended without waking the writer thread: it finds what gathered when its wait of
            # `interval` ends (start_log_writer), so records go to the store in batches. A put()
            # woke it for a transaction of one record per message: ~0.7 ms of CPU per message.
            with pending.mutex:
                pending.queue.append(record)
            return
        try:
            self.store.log_message(record)
        except Exception as exc:   # noqa: BLE001 - a log failure must not lose the message
            log.warning("%s: could not store the tracking record: %s", qid, exc)
            self.count_error("log")

    # -- batched tracking records (daemon workers) ----------------------------------

    def start_log_writer(self, interval: float = 0.25, batch: int = 256) -> None:
        """Write tracking records from a background thread, many per transaction: a commit per
        message was a measurable share of the CPU a message costs. Records wait at most
        `interval` seconds; stop_log_writer() flushes them."""
        self._log_queue = queue.Queue()
        self._log_thread = threading.Thread(target=self._log_writer, args=(interval, batch),
                                            name="imss-log-writer", daemon=True)
        self._log_thread.start()

    def stop_log_writer(self, timeout: float = 10.0) -> None:
        if self._log_queue is None:
            return
        self._log_queue.put(None)
        self._log_thread.join(timeout)
        self._log_queue = None

    def _log_writer(self, interval: float, batch: int) -> None:
        pending = []
        running = True
        while running:
            try:
                item = self._log_queue.get(timeout=interval)
                if item is None:
                    running = False
                else:
                    pending.append(item)
                    while len(pending) < batch:
                        item = self._log_queue.get_nowait()
                        if item is None:
                            running = False
                            break
                        pending.append(item)
            except queue.Empty:
                pass
            if pending:
                try:
                    self.store.log_messages(pending)
                except Exception as exc:   # noqa: BLE001 - logs must never stop mail
                    log.warning("could not store %d tracking record(s): %s", len(pending), exc)
                    self.count_error("log")
                pending = []
