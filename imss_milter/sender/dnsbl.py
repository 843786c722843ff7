"""DNSBL email reputation: pure query-name and answer planning, plus a thin cached, parallel dnspython layer.

The pure half (query_name, classify_answer) needs no socket; DnsblChecker
does the I/O: every zone in parallel within the dns.timeout budget, answers
cached for their TTL (NXDOMAIN too), one query in flight per (zone, ip).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import dns.exception
import dns.message
import dns.rdatatype
import dns.resolver

from .config import LISTING_NET, REFUSAL_NET, CodeRange, DnsConfig, ZoneConfig
from .lists import normalize_ip

# 127.255.255.0/24 is how DNSBLs say "your resolver is refused or over quota", never a listing.

# TTL bounds for the answer cache: a 0-TTL answer must still absorb a burst, and no answer lives forever.
MIN_CACHE_SECONDS = 10.0
MAX_CACHE_SECONDS = 86400.0
NEGATIVE_DEFAULT_SECONDS = 300.0
# Errors are cached briefly so that a dead zone costs one timeout per burst, not one per connection.
ERROR_CACHE_SECONDS = 30.0
CACHE_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class ZoneResult:
    """The outcome for one zone: status is listed | clean | error."""

    zone: str
    status: str
    categories: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    error: str | None = None
    ttl: float = NEGATIVE_DEFAULT_SECONDS
    cached: bool = False


def query_name(ip: str, zone: str) -> str | None:
    """The DNSBL name for ip in zone: reversed octets (IPv4) or reversed nibbles (IPv6); None if ip is not an IP."""
    address = normalize_ip(ip)
    if address is None:
        return None
    zone = zone.strip().rstrip(".")
    if address.version == 4:
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone


def categories_for(address: int, codes: Iterable[CodeRange]) -> list[str]:
    """Every category whose range covers the answer address."""
    return [code.category for code in codes if code.covers(address)]


def classify_answer(zone: str, addresses: Iterable[str], codes: tuple[CodeRange, ...] | None,
                    ttl: float = NEGATIVE_DEFAULT_SECONDS) -> ZoneResult:
    """Turn the A records of a DNSBL answer into listed / clean / error (SPEC §6).

    127.255.255.0/24 anywhere → error (the DNSBL refused our resolver).
    Anything outside 127.0.0.0/8 → error (a wildcard or hijacked zone, not a DNSBL answer).
    With codes: categories of the answers the codes name; unnamed codes are ignored.
    Without codes: any 127.0.0.0/8 answer lists, with the zone name as the category.
    """
    parsed = []
    for text in addresses:
        try:
            parsed.append(ipaddress.IPv4Address(text))
        except ValueError:
            return ZoneResult(zone, "error", addresses=tuple(addresses), error=f"malformed answer {text!r}", ttl=ttl)
    texts = tuple(str(a) for a in parsed)
    if not parsed:
        return ZoneResult(zone, "clean", ttl=ttl)
    refused = [a for a in parsed if a in REFUSAL_NET]
    if refused:
        return ZoneResult(zone, "error", addresses=texts, ttl=ttl,
                          error=f"DNSBL refused the query (answer {refused[0]})")
    outside = [a for a in parsed if a not in LISTING_NET]
    if outside:
        return ZoneResult(zone, "error", addresses=texts, ttl=ttl,
                          error=f"answer {outside[0]} is outside 127.0.0.0/8")
    if codes is None:
        return ZoneResult(zone, "listed", categories=(zone,), addresses=texts, ttl=ttl)
    categories: list[str] = []
    for address in parsed:
        for category in categories_for(int(address), codes):
            if category not in categories:
                categories.append(category)
    if not categories:
        return ZoneResult(zone, "clean", addresses=texts, ttl=ttl)
    return ZoneResult(zone, "listed", categories=tuple(categories), addresses=texts, ttl=ttl)


def cache_seconds(result: ZoneResult) -> float:
    """How long to keep a result: its TTL within bounds; errors only briefly."""
    if result.status == "error":
        return ERROR_CACHE_SECONDS
    return max(MIN_CACHE_SECONDS, min(MAX_CACHE_SECONDS, result.ttl))


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308: the negative TTL is min(SOA TTL, SOA minimum) from the authority section."""
    if response is None:
        return NEGATIVE_DEFAULT_SECONDS
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_DEFAULT_SECONDS


class ZoneResolver:
    """One dnspython Resolver per nameserver set; counts the queries it really sends (for metrics and tests)."""

    def __init__(self, dns_config: DnsConfig, zone: ZoneConfig):
        self.zone = zone
        nameservers = zone.nameservers or dns_config.nameservers
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
        else:
            try:
                resolver = dns.resolver.Resolver(configure=True)
            except dns.exception.DNSException:
                # no usable /etc/resolv.conf: a local caching resolver is the usual DNSBL setup
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        resolver.port = zone.port or dns_config.port
        resolver.timeout = dns_config.timeout
        resolver.lifetime = dns_config.timeout
        resolver.cache = None      # our own cache knows about errors and per-zone meaning
        self.resolver = resolver
        self.timeout = dns_config.timeout
        self.queries_sent = 0
        self._lock = threading.Lock()

    def lookup(self, ip: str) -> ZoneResult:
        name = query_name(ip, self.zone.zone)
        if name is None:
            return ZoneResult(self.zone.zone, "clean", error="not an IP address")
        return self.lookup_name(name)

    def lookup_name(self, name: str) -> ZoneResult:
        """The zone's answer for an already built query name (URI blocklists query domains, not IPs)."""
        zone = self.zone.zone
        with self._lock:
            self.queries_sent += 1
        try:
            answer = self.resolver.resolve(name, "A", lifetime=self.timeout, raise_on_no_answer=False,
                                           search=False)
        except dns.resolver.NXDOMAIN as exc:
            response = None
            try:
                response = exc.response(exc.qnames()[0]) if exc.qnames() else None
            except Exception:
                pass
            return ZoneResult(zone, "clean", ttl=_negative_ttl(response))
        except dns.resolver.NoNameservers as exc:
            return ZoneResult(zone, "error", error=f"SERVFAIL/REFUSED from every nameserver: {_short(exc)}")
        except dns.exception.Timeout:
            return ZoneResult(zone, "error", error=f"timeout after {self.timeout:g}s")
        except dns.exception.DNSException as exc:
            return ZoneResult(zone, "error", error=f"DNS error: {_short(exc)}")
        if answer.rrset is None:
            return ZoneResult(zone, "clean", ttl=_negative_ttl(answer.response))
        addresses = [rdata.address for rdata in answer.rrset]
        return classify_answer(zone, addresses, self.zone.codes, ttl=float(answer.rrset.ttl))


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class _CacheEntry:
    expires: float
    result: ZoneResult


@dataclass
class LookupReport:
    """Results of one connect-stage lookup across all zones, in config order."""

    results: list[ZoneResult] = field(default_factory=list)

    @property
    def listed(self) -> list[ZoneResult]:
        return [r for r in self.results if r.status == "listed"]

    @property
    def errors(self) -> list[ZoneResult]:
        return [r for r in self.results if r.status == "error"]


class DnsblChecker:
    """All configured zones for one IP: cached, parallel, bounded by the DNS timeout."""

    def __init__(self, zones: tuple[ZoneConfig, ...], dns_config: DnsConfig,
                 clock: Callable[[], float] = time.monotonic, max_workers: int = 32):
        self.zones = zones
        self.dns_config = dns_config
        self.resolvers = {z.zone: ZoneResolver(dns_config, z) for z in zones}
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], _CacheEntry] = OrderedDict()
        self._in_flight: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid: int | None = None

    def _pool(self) -> ThreadPoolExecutor:
        # created lazily so a filter built before the milter forks its workers owns no threads yet
        # (and again in a forked child, where the parent's pool threads do not exist)
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="dnsbl")
            self._executor_pid = os.getpid()
        return self._executor

    def queries_sent(self, zone: str) -> int:
        return self.resolvers[zone].queries_sent

    def _cached(self, key, now) -> ZoneResult | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry.result

    def _store(self, key, result: ZoneResult) -> None:
        with self._lock:
            self._cache[key] = _CacheEntry(self._clock() + cache_seconds(result), result)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)
            self._in_flight.pop(key, None)

    def _run_lookup(self, key, zone: str, ip: str) -> ZoneResult:
        try:
            result = self.resolvers[zone].lookup(ip)
        except Exception as exc:     # never let a resolver bug turn into a listing or a crash
            result = ZoneResult(zone, "error", error=f"lookup failed: {_short(exc)}")
        self._store(key, result)
        return result

    def check(self, ip: str) -> LookupReport:
        """Results for every zone; waits at most the DNS timeout (plus a little) for uncached zones."""
        address = normalize_ip(ip)
        report = LookupReport()
        if address is None or not self.zones:
            return report
        ip_key = str(address)
        now = self._clock()
        pending: dict[str, Future] = {}
        joined: set[str] = set()      # lookups another thread started: they cost no query of ours
        ready: dict[str, ZoneResult] = {}
        with self._lock:
            for zone in self.zones:
                key = (zone.zone, ip_key)
                cached = self._cached(key, now)
                if cached is not None:
                    ready[zone.zone] = replace(cached, cached=True)
                    continue
                future = self._in_flight.get(key)
                if future is not None:
                    joined.add(zone.zone)
                else:
                    future = self._pool().submit(self._run_lookup, key, zone.zone, ip_key)
                    self._in_flight[key] = future
                pending[zone.zone] = future
        if pending:
            # the resolver enforces its own lifetime; the margin only covers thread scheduling
            wait(pending.values(), timeout=self.dns_config.timeout + 0.5)
        for zone in self.zones:
            if zone.zone in ready:
                report.results.append(ready[zone.zone])
                continue
            future = pending[zone.zone]
            if future.done():
                result = future.result()
                report.results.append(replace(result, cached=True) if zone.zone in joined else result)
            else:
                report.results.append(ZoneResult(zone.zone, "error",
                                                 error=f"timeout after {self.dns_config.timeout:g}s"))
        return report

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
