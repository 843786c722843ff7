"""Approved/blocked host and sender lists: pure matching of client IPs, client names and envelope senders."""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from dataclasses import dataclass

from .config import looks_like_ip


def normalize_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address as the MTA passes it ("IPv6:2001:db8::1", "[192.0.2.1]", mapped v4) or None."""
    if not value or not isinstance(value, str):
        return None
    return _normalize_ip(value)


@functools.lru_cache(maxsize=4096)
def _normalize_ip(value: str):
    """normalize_ip for a string: asked several times per connection, so remembered."""
    text = value.strip().strip("[]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.split("%", 1)[0]      # scoped link-local: the scope means nothing to a list
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def verified_hostname(hostname: str | None) -> str | None:
    """The client name only when the MTA verified it; Postfix passes "unknown" or "[ip]" otherwise."""
    if not hostname or not isinstance(hostname, str):
        return None
    name = hostname.strip().rstrip(".").lower()
    if not name or name == "unknown" or name.startswith("["):
        return None
    return name


@dataclass(frozen=True)
class HostList:
    """IP addresses/CIDRs and hostname globs; match() returns the pattern that matched."""

    networks: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...]
    name_globs: tuple[str, ...]

    @classmethod
    def from_patterns(cls, patterns) -> "HostList":
        networks, globs = [], []
        for pattern in patterns:
            if looks_like_ip(pattern):
                networks.append((pattern, ipaddress.ip_network(pattern, strict=False)))
            else:
                globs.append(pattern.lower().rstrip("."))
        return cls(tuple(networks), tuple(globs))

    def match(self, ip: str | None, hostname: str | None = None) -> str | None:
        address = normalize_ip(ip)
        if address is not None:
            for pattern, network in self.networks:
                if address.version == network.version and address in network:
                    return pattern
        name = verified_hostname(hostname)
        if name is not None:
            for glob in self.name_globs:
                if fnmatch.fnmatchcase(name, glob):
                    return glob
        return None

    def __bool__(self) -> bool:
        return bool(self.networks or self.name_globs)


def normalize_address(address: str | None) -> str:
    """Envelope address without <>, surrounding spaces or case; "" for the null sender."""
    if not address or not isinstance(address, str):
        return ""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text.lower()


def address_domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


@dataclass(frozen=True)
class SenderList:
    """Address globs (`*@partner.test`, `ap-*@example.com`), domain globs (`spam.test`, `*.spam.test`) and `<>`."""

    patterns: tuple[str, ...]

    @classmethod
    def from_patterns(cls, patterns) -> "SenderList":
        return cls(tuple(p.strip().lower() for p in patterns))

    def match(self, sender: str | None) -> str | None:
        address = normalize_address(sender)
        domain = address_domain(address)
        for pattern in self.patterns:
            if pattern == "<>":
                if address == "":
                    return pattern
            elif not address:
                continue
            elif "@" in pattern:
                if pattern.startswith("@"):
                    if fnmatch.fnmatchcase(domain, pattern[1:]):
                        return pattern
                elif fnmatch.fnmatchcase(address, pattern):
                    return pattern
            elif domain and fnmatch.fnmatchcase(domain, pattern):
                return pattern
        return None

    def __bool__(self) -> bool:
        return bool(self.patterns)
