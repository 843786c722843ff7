"""The recipient directory used for DHA detection: address files (reloaded on change) and LDAP (cached).

lookup() answers "known", "unknown" or "not-local" (a domain the directory
does not speak for, e.g. outbound mail); it raises DirectoryUnavailable
when the backend cannot answer, so the caller can apply on_error.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import ConfigError, ImssError
from ..yamlconf import fail
from .config import DirectoryConfig, LdapConfig
from .lists import address_domain, normalize_address

log = logging.getLogger(__name__)

KNOWN, UNKNOWN, NOT_LOCAL = "known", "unknown", "not-local"


class DirectoryUnavailable(ImssError):
    default_message = "recipient directory unavailable"


@dataclass(frozen=True)
class AddressSet:
    addresses: frozenset[str]
    catch_all_domains: frozenset[str]

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(address_domain(a) for a in self.addresses) | self.catch_all_domains


def parse_address_lines(text: str, file: str = "<string>") -> tuple[AddressSet, list[tuple[int, str]]]:
    """Addresses and `@domain` catch-alls, one per line, `#` comments; returns the set and the bad lines."""
    addresses, domains, bad = set(), set(), []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        entry = normalize_address(line)
        local, at, domain = entry.rpartition("@")
        if not at or not domain or " " in entry or "." not in domain and domain != "localhost":
            bad.append((number, raw.strip()))
        elif not local:
            domains.add(domain)
        else:
            addresses.add(entry)
    return AddressSet(frozenset(addresses), frozenset(domains)), bad


class FileDirectory:
    """Address files; each is re-read when its mtime or size changes (checked at most once a second)."""

    CHECK_INTERVAL = 1.0

    def __init__(self, paths: list[tuple[str, object, object]]):
        self._paths = [p for p, _, _ in paths]
        self._signatures: dict[str, tuple[float, int] | None] = {}
        self._sets: dict[str, AddressSet] = {}
        self._lock = threading.Lock()
        self._next_check = 0.0
        for path, container, key in paths:
            try:
                self._load(path, strict=True)
            except OSError as exc:
                raise fail(f"directory file {path}: {exc.strerror}", container, key) from None

    def _load(self, path: str, strict: bool = False) -> None:
        stat = os.stat(path)
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        address_set, bad = parse_address_lines(text, path)
        if bad:
            number, line = bad[0]
            if strict:
                raise ConfigError(f"expected an address or @domain, got {line!r}", path, number)
            log.warning("%s:%d: ignoring %r (expected an address or @domain)", path, number, line)
        self._sets[path] = address_set
        self._signatures[path] = (stat.st_mtime_ns, stat.st_size)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self.CHECK_INTERVAL
            for path in self._paths:
                try:
                    stat = os.stat(path)
                    if self._signatures.get(path) != (stat.st_mtime_ns, stat.st_size):
                        self._load(path)
                except OSError as exc:
                    # a file being replaced or briefly missing: keep what we had, mail keeps flowing
                    log.warning("directory file %s: %s (keeping the previous contents)", path, exc.strerror)

    @property
    def domains(self) -> frozenset[str]:
        self._refresh()
        result: frozenset[str] = frozenset()
        for address_set in self._sets.values():
            result |= address_set.domains
        return result

    def lookup(self, address: str) -> bool:
        self._refresh()
        domain = address_domain(address)
        return any(address in s.addresses or domain in s.catch_all_domains for s in self._sets.values())


def ldap_filter_for(template: str, address: str) -> str:
    """Fill %s (address), %u (local part), %d (domain) with values escaped for an LDAP filter (RFC 4515)."""
    from ldap3.utils.conv import escape_filter_chars

    local, _, domain = address.rpartition("@")
    values = {"s": address, "u": local, "d": domain, "%": "%"}
    out, index = [], 0
    while index < len(template):
        char = template[index]
        if char == "%" and index + 1 < len(template) and template[index + 1] in values:
            key = template[index + 1]
            out.append("%" if key == "%" else escape_filter_chars(values[key]))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


class LdapDirectory:
    """An LDAP search per address (any entry found = known), with a TTL cache for both answers."""

    def __init__(self, config: LdapConfig, clock=time.monotonic, max_entries: int = 50_000):
        self.config = config
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._connection = None
        self._connection_lock = threading.Lock()
        self.searches = 0

    def _connect(self):
        import ldap3

        server = ldap3.Server(self.config.url, connect_timeout=self.config.timeout, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, user=self.config.bind_dn, password=self.config.bind_password,
                                      client_strategy=ldap3.SAFE_SYNC,
                                      # ldap3 packs this into SO_RCVTIMEO as whole seconds
                                      receive_timeout=max(1, math.ceil(self.config.timeout)),
                                      raise_exceptions=False, read_only=True)
        status, result, _, _ = connection.bind()
        if not status:
            raise DirectoryUnavailable(f"LDAP bind to {self.config.url} failed: {result.get('description')}")
        return connection

    def _search(self, address: str) -> bool:
        import ldap3
        from ldap3.core.exceptions import LDAPException

        search_filter = ldap_filter_for(self.config.filter, address)
        for attempt in (1, 2):      # one reconnect: the server may have closed an idle connection
            with self._connection_lock:
                if self._connection is None:
                    try:
                        self._connection = self._connect()
                    except (LDAPException, OSError, ValueError) as exc:
                        raise DirectoryUnavailable(f"LDAP {self.config.url}: {exc}") from None
                connection = self._connection
            try:
                self.searches += 1
                status, result, response, _ = connection.search(self.config.base, search_filter,
                                                                search_scope=ldap3.SUBTREE,
                                                                attributes=[], size_limit=1)
            except (LDAPException, OSError, ValueError) as exc:
                with self._connection_lock:
                    self._connection = None
                if attempt == 2:
                    raise DirectoryUnavailable(f"LDAP {self.config.url}: {exc}") from None
                continue
            code = result.get("result") if isinstance(result, dict) else None
            if code in (0, 4, 32):      # success, sizeLimitExceeded (found more than one), noSuchObject
                return any(entry.get("type") == "searchResEntry" for entry in (response or []))
            with self._connection_lock:
                self._connection = None
            if attempt == 2:
                raise DirectoryUnavailable(f"LDAP search failed: {result.get('description') if result else code}")
        return False

    def lookup(self, address: str) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._cache.get(address)
            if entry is not None and entry[0] > now:
                self._cache.move_to_end(address)
                return entry[1]
        found = self._search(address)
        ttl = self.config.cache_ttl if found else self.config.negative_ttl
        with self._lock:
            self._cache[address] = (now + ttl, found)
            self._cache.move_to_end(address)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return found


class Directory:
    """Files and/or LDAP; an address is known when any backend knows it."""

    def __init__(self, config: DirectoryConfig):
        self.config = config
        self.files = FileDirectory(list(config.files)) if config.files else None
        self.ldap = LdapDirectory(config.ldap) if config.ldap else None

    def _is_local(self, domain: str) -> bool:
        if self.config.domains:
            if domain in self.config.domains:
                return True
        elif self.ldap is not None:
            return True          # LDAP without `domains`: it speaks for every recipient
        return self.files is not None and domain in self.files.domains

    def lookup(self, recipient: str) -> str:
        address = normalize_address(recipient)
        domain = address_domain(address)
        if not domain or not self._is_local(domain):
            return NOT_LOCAL
        if self.files is not None and self.files.lookup(address):
            return KNOWN
        if self.ldap is not None and self.ldap.lookup(address):
            return KNOWN
        return UNKNOWN
