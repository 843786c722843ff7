"""Prometheus metrics (SPEC §7): workers count, the master serves one merged view over HTTP.

The daemon is several processes, so prometheus-client runs in multiprocess
mode: every process writes its samples to memory-mapped files in one
directory (wiped at start) and the master's HTTP server merges them with a
MultiProcessCollector at scrape time. Values only the master knows (messages
held per area, versions) are computed at scrape by collectors of its own.

Label values are always from small fixed sets (verdicts, directions, rule
names, stage names, zones): never addresses, subjects or client IPs.
"""

from __future__ import annotations

import bisect
import collections
import glob
import logging
import os
import threading

log = logging.getLogger("imss_milter")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Scanning takes from well under a millisecond (small text) to seconds (big archives).
SCAN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Every metric name we export: the Grafana dashboard test checks its queries against this.
METRIC_NAMES = (
    "imss_messages_total", "imss_rule_hits_total", "imss_connections_total", "imss_scan_seconds",
    "imss_engine_errors_total", "imss_dns_lookups_total", "imss_quarantine_messages",
    "imss_archive_messages", "imss_pattern_version_info", "imss_messages_in_flight",
    "imss_milter_errors_total", "imss_notifications_total",
    "imss_pattern_update_last_result", "imss_pattern_update_last_run_timestamp_seconds",
)


class NullMetrics:
    """What runs when metrics are off (metrics.listen is empty, `scan`, tests): every call is a no-op."""

    enabled = False

    def message(self, verdict, direction, rules, timings) -> None: ...
    def connection(self, result: str) -> None: ...
    def milter_error(self, callback: str) -> None: ...
    def engine_error(self, engine: str) -> None: ...
    def notification(self, result: str) -> None: ...
    def in_flight(self, delta: int) -> None: ...
    def sync_sender_stats(self, stats: dict) -> None: ...


def prepare_multiprocess_dir(path: str) -> str:
    """Create (or empty) the directory the processes share; must run before any metric exists.

    Left-over files of a previous run would add its counts to ours, so they go.
    """
    os.makedirs(path, mode=0o750, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            os.unlink(name)
        except OSError as exc:
            log.warning("cannot remove old metrics file %s: %s", name, exc.strerror)
    os.environ[MULTIPROC_ENV] = path
    # prometheus-client picks its value class once at import: pick again now that the directory is set.
    from prometheus_client import values
    values.ValueClass = values.get_value_class()
    return path


class Metrics:
    """The metrics a worker (or the master) writes; build after prepare_multiprocess_dir()."""

    enabled = True

    def __init__(self, registry=None):
        from prometheus_client import Counter, Gauge, Histogram
        # Multiprocess samples are written to files, not kept in a registry: registry=None.
        self.messages = Counter("imss_messages_total", "Messages judged, by final verdict and direction",
                                ["verdict", "direction"], registry=registry)
        self.rule_hits = Counter("imss_rule_hits_total", "Policies that matched a message", ["rule"],
                                 registry=registry)
        self.connections = Counter("imss_connections_total", "SMTP connections by sender-filtering result",
                                   ["result"], registry=registry)
        self.scan_seconds = Histogram("imss_scan_seconds", "Time spent scanning a message, by stage", ["stage"],
                                      buckets=SCAN_BUCKETS, registry=registry)
        self.engine_errors = Counter("imss_engine_errors_total", "Internal errors of scanning engines", ["engine"],
                                     registry=registry)
        self.dns_lookups = Counter("imss_dns_lookups_total", "DNSBL lookups by zone and result", ["zone", "result"],
                                   registry=registry)
        self.milter_errors = Counter("imss_milter_errors_total", "Internal errors in milter callbacks and the store",
                                     ["callback"], registry=registry)
        self.notifications = Counter("imss_notifications_total", "Notification mails by outcome", ["result"],
                                     registry=registry)
        # livesum: a worker that exits takes its messages in flight with it (mark_process_dead)
        self.messages_in_flight = Gauge("imss_messages_in_flight", "Messages between MAIL FROM and the verdict",
                                        multiprocess_mode="livesum", registry=registry)
        self._sender_seen: dict = {}
        # Batching (daemon workers): per-message updates go to plain dicts, and flush() writes their
        # sums to the multiprocess files. A dozen mmap writes per message were ~0.7 ms of CPU.
        self._batching = False
        self._lock = threading.Lock()
        self._pending_messages: collections.Counter = collections.Counter()
        self._pending_rules: collections.Counter = collections.Counter()
        self._pending_seconds: dict = {}

    def start_batching(self) -> None:
        self._batching = True

    def message(self, verdict: str, direction: str, rules, timings: dict) -> None:
        if self._batching:
            with self._lock:
                self._pending_messages[(verdict, direction)] += 1
                for rule in rules:
                    self._pending_rules[rule] += 1
                for stage, seconds in (timings or {}).items():
                    self._pending_seconds.setdefault(stage, []).append(seconds)
            return
        self.messages.labels(verdict=verdict, direction=direction).inc()
        for rule in rules:
            self.rule_hits.labels(rule=rule).inc()
        for stage, seconds in (timings or {}).items():
            self.scan_seconds.labels(stage=stage).observe(seconds)

    def flush(self) -> None:
        """Write what message() batched: one increment per label set and histogram bucket."""
        with self._lock:
            messages, self._pending_messages = self._pending_messages, collections.Counter()
            rules, self._pending_rules = self._pending_rules, collections.Counter()
            seconds, self._pending_seconds = self._pending_seconds, {}
        for (verdict, direction), count in messages.items():
            self.messages.labels(verdict=verdict, direction=direction).inc(count)
        for rule, count in rules.items():
            self.rule_hits.labels(rule=rule).inc(count)
        for stage, values in seconds.items():
            observe_many(self.scan_seconds.labels(stage=stage), values)

    def connection(self, result: str) -> None:
        self.connections.labels(result=result).inc()

    def milter_error(self, callback: str) -> None:
        self.milter_errors.labels(callback=callback).inc()

    def engine_error(self, engine: str) -> None:
        self.engine_errors.labels(engine=engine).inc()

    def notification(self, result: str) -> None:
        self.notifications.labels(result=result).inc()

    def in_flight(self, delta: int) -> None:
        self.messages_in_flight.inc(delta)

    def sync_sender_stats(self, stats: dict) -> None:
        """Add what the sender filter counted since the last call (its counters are cumulative)."""
        for result, total in sender_stat_deltas(self._sender_seen, stats):
            kind, labels = result
            if kind == "connections":
                self.connections.labels(result=labels[0]).inc(total)
            elif kind == "dns_lookups":
                self.dns_lookups.labels(zone=labels[0], result=labels[1]).inc(total)


def observe_many(histogram, values) -> None:
    """Histogram.observe() for many values with one write per bucket (prometheus-client keeps
    per-bucket counts and the sum; observe() updates the one bucket of the value and the sum)."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    if buckets is None or bounds is None or not hasattr(histogram, "_sum"):
        for value in values:                  # a prometheus-client without those internals
            histogram.observe(value)
        return
    counts = collections.Counter(bisect.bisect_left(bounds, value) for value in values)
    for index, count in counts.items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(values))


def sender_stat_deltas(seen: dict, stats: dict) -> list:
    """[((kind, labels), increase)] between the cumulative counters in `seen` and `stats`; updates `seen`."""
    current = {}
    for result, count in (stats.get("connections") or {}).items():
        current[("connections", (result,))] = count
    for zone, results in (stats.get("dns_lookups") or {}).items():
        for result, count in results.items():
            current[("dns_lookups", (zone, result))] = count
    deltas = []
    for key, count in current.items():
        increase = count - seen.get(key, 0)
        if increase > 0:
            deltas.append((key, increase))
        seen[key] = count
    return deltas


def build(settings, multiproc_dir: str):
    """Metrics for the daemon when metrics.listen is set, else NullMetrics."""
    if not settings.metrics_listen:
        return NullMetrics()
    prepare_multiprocess_dir(multiproc_dir)
    return Metrics()


# -- the master's side: scrape-time collectors and the HTTP server ----------------------

class StoreCollector:
    """imss_quarantine_messages / imss_archive_messages per area, counted in the store at scrape."""

    def __init__(self, store_getter):
        self.store_getter = store_getter

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        store = self.store_getter()
        for kind, name in (("quarantine", "imss_quarantine_messages"), ("archive", "imss_archive_messages")):
            family = GaugeMetricFamily(name, f"Messages held in {kind} areas", labels=["area"])
            try:
                counts = store.counts(kind) if store is not None else {}
            except Exception as exc:   # noqa: BLE001 - a busy store must not break the whole scrape
                log.warning("metrics: cannot count %s messages: %s", kind, exc)
                counts = {}
            for area, count in sorted(counts.items()):
                family.add_metric([area], count)
            yield family


class VersionCollector:
    """imss_pattern_version_info{component,version} = 1 for each installed component.

    versions_getter returns {component: version}; the update machinery (or anything
    that installs patterns) provides it, the daemon itself reports its own version
    and the rule set generation.
    """

    def __init__(self, versions_getter):
        self.versions_getter = versions_getter

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        family = GaugeMetricFamily("imss_pattern_version_info", "Installed versions of engines, patterns and rules",
                                   labels=["component", "version"])
        try:
            versions = self.versions_getter() or {}
        except Exception as exc:   # noqa: BLE001
            log.warning("metrics: cannot read component versions: %s", exc)
            versions = {}
        for component, version in sorted(versions.items()):
            family.add_metric([str(component), str(version)], 1)
        yield family


def scrape_registry(multiproc_dir: str, store_getter, versions_getter):
    """The registry the master serves: every process's files merged, plus the scrape-time gauges."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    registry.register(StoreCollector(store_getter))
    registry.register(VersionCollector(versions_getter))
    return registry


def parse_listen(listen: str) -> tuple[str, int]:
    """("host", port) from settings' "host:port" or "[v6]:port"."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def serve(listen: str, registry):
    """Start the HTTP server thread; raises OSError when the address cannot be bound."""
    from prometheus_client import start_http_server
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def process_exited(pid: int) -> None:
    """A worker is gone: drop its live gauges (messages in flight) from the merged view."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)
