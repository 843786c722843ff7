"""URI blocklist lookups: pure query planning and answer reading, plus a cached, concurrent DNS layer.

Domain zones (URIBL, SURBL style) are asked for the registered domain and
the full host; IP zones for a URL's literal IP in reversed octets. Answers
are read as sender DNSBL answers are (sender.dnsbl.classify_answer): a
127.255.255.0/24 answer is an error, never a listing.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace

from ...sender.config import DEFAULT_REPLIES, DnsConfig, ZoneConfig
from ...sender.dnsbl import ZoneResolver, ZoneResult, cache_seconds, query_name
from .config import UrlZone
from .normalise import NormalUrl, registered_domain

CACHE_MAX_ENTRIES = 50_000
MAX_WORKERS = 16


def query_names(url: NormalUrl, zone: UrlZone) -> list[str]:
    """The names to ask `zone` about this URL (none when the zone type does not fit the host)."""
    if zone.type == "ip":
        name = query_name(url.host, zone.zone) if url.is_ip else None
        return [name] if name else []
    if url.is_ip:
        return []
    domain = registered_domain(url.host)
    names = [f"{domain}.{zone.zone}"]
    if url.host != domain:
        names.append(f"{url.host}.{zone.zone}")
    return names


def read_bitmask(result: ZoneResult, bitmask: tuple[tuple[int, str], ...]) -> ZoneResult:
    """A listing of a bitmask zone (127.0.0.X, each bit one list) as the categories of its bits."""
    if result.status != "listed":
        return result
    categories: list[str] = []
    for text in result.addresses:
        bits = int(ipaddress.IPv4Address(text)) & 0x00FFFFFF
        for bit, category in bitmask:
            if bits & bit and category not in categories:
                categories.append(category)
    if not categories:
        return replace(result, status="clean", categories=())
    return replace(result, categories=tuple(categories))


class UrlLookups:
    """Every zone's resolver, one answer cache (per TTL, errors briefly) and a small thread pool."""

    def __init__(self, zones: tuple[UrlZone, ...], dns_config: DnsConfig, clock=time.monotonic):
        self.zones = {zone.zone: zone for zone in zones}
        self.dns_config = dns_config
        self.resolvers = {
            zone.zone: ZoneResolver(dns_config, ZoneConfig(zone.zone, zone.codes, DEFAULT_REPLIES["tag"],
                                                           zone.nameservers, zone.port))
            for zone in zones}
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, ZoneResult]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid: int | None = None

    def _pool(self) -> ThreadPoolExecutor:
        # made on first use, and again in a forked worker: a parent's pool threads do not exist there
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="imss-url")
            self._executor_pid = os.getpid()
        return self._executor

    def reset_after_fork(self) -> None:
        self._executor = None
        self._lock = threading.Lock()

    def queries_sent(self, zone: str) -> int:
        return self.resolvers[zone].queries_sent

    def _lookup(self, zone: str, name: str) -> ZoneResult:
        try:
            result = self.resolvers[zone].lookup_name(name)
        except Exception as exc:      # a resolver bug must become an error, never a listing or a crash
            result = ZoneResult(zone, "error", error=f"lookup failed: {exc}")
        bitmask = self.zones[zone].bitmask
        if bitmask:
            result = read_bitmask(result, bitmask)
        with self._lock:
            self._cache[(zone, name)] = (self._clock() + cache_seconds(result), result)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)
        return result

    def lookup_all(self, queries, timeout: float) -> dict[tuple[str, str], ZoneResult]:
        """The result of every (zone, name): from the cache, else asked concurrently; a query not
        answered within `timeout` is an error."""
        results: dict[tuple[str, str], ZoneResult] = {}
        pending = {}
        now = self._clock()
        with self._lock:
            for key in dict.fromkeys(queries):
                entry = self._cache.get(key)
                if entry is not None and entry[0] > now:
                    self._cache.move_to_end(key)
                    results[key] = replace(entry[1], cached=True)
                else:
                    pending[key] = None
        for key in pending:
            pending[key] = self._pool().submit(self._lookup, *key)
        if pending:
            wait(pending.values(), timeout=max(0.0, timeout))
        for key, future in pending.items():
            if future.done():
                results[key] = future.result()
            else:
                future.cancel()
                results[key] = ZoneResult(key[0], "error", error=f"no answer within {timeout:g}s")
        return results
