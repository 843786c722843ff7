"""Validate the `engines.url` section (SPEC §6) into frozen objects; every mistake names file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from ...sender.config import CodeRange, parse_codes
from ...yamlconf import fail
from .. import section_keys

ZONE_TYPES = ("domain", "ip")
ZONE_KEYS = ("zone", "type", "codes", "bitmask", "nameservers", "port")
ENGINE_KEYS = ("zones", "blocked", "max_urls")
DEFAULT_MAX_URLS = 50
_ZONE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?")
_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_.-]*")
# one list per bit of the answer's last octet; bit 1 is left out: URIBL answers 127.0.0.1 for a
# refused query, so a category on it would turn refusals into listings
BITMASK_BITS = (2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class UrlZone:
    """One URI blocklist: what it is asked (domains or IPs) and how its answers read."""

    zone: str
    type: str = "domain"                                  # domain | ip
    codes: tuple[CodeRange, ...] | None = None            # answer address → category
    bitmask: tuple[tuple[int, str], ...] | None = None    # answer bit → category (SURBL/URIBL multi)
    nameservers: tuple[str, ...] | None = None
    port: int | None = None


@dataclass(frozen=True)
class UrlConfig:
    zones: tuple[UrlZone, ...] = ()
    blocked: tuple[str, ...] = ()      # globs from the config: category "blocked"
    max_urls: int = DEFAULT_MAX_URLS   # distinct hosts looked up per message


def category_name(value, container, key, what: str) -> str:
    if not isinstance(value, str) or not _CATEGORY.fullmatch(value.strip().lower()):
        raise fail(f"{what}: expected a category name (letters, digits, '-', '_'), got {value!r}", container, key)
    return value.strip().lower()


def _codes(raw, entry, what: str) -> tuple[CodeRange, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise fail(f"{what}.codes: expected a mapping of answer address to category", entry, "codes")
    return parse_codes(raw, what, category_name, "127.0.1.2")


def _bitmask(raw, entry, what: str) -> tuple[tuple[int, str], ...]:
    allowed = ", ".join(map(str, BITMASK_BITS[:-1])) + f" or {BITMASK_BITS[-1]}"
    if not isinstance(raw, Mapping) or not raw:
        raise fail(f"{what}.bitmask: expected a mapping of bit value ({allowed}) to category", entry, "bitmask")
    bits = []
    for key, category in raw.items():
        bit = int(key) if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()) else 0
        if isinstance(key, bool) or bit not in BITMASK_BITS:
            raise fail(f"{what}.bitmask: expected a single bit value of the answer's last octet ({allowed}), "
                       f"got {key!r}", raw, key)
        bits.append((bit, category_name(category, raw, key, f"{what}.bitmask.{key}")))
    return tuple(bits)


def _zone(entry, container, index) -> UrlZone:
    what = f"engines.url.zones[{index}]"
    if not isinstance(entry, Mapping):
        raise fail(f"{what}: expected a mapping like {{zone: uribl.example.test, type: domain}}", container, index)
    for key in entry:
        if key not in ZONE_KEYS:
            raise fail(f"{what}: unknown key {key!r} (expected one of: {', '.join(ZONE_KEYS)})", entry, key)
    name = entry.get("zone")
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name.strip()):
        raise fail(f"{what}.zone: expected a DNS zone name like uribl.example.test, got {name!r}",
                   entry, "zone" if "zone" in entry else None)
    zone_type = entry.get("type", "domain")
    if zone_type not in ZONE_TYPES:
        raise fail(f"{what}.type: expected one of {', '.join(ZONE_TYPES)}, got {zone_type!r}", entry, "type")
    if "codes" in entry and "bitmask" in entry:
        raise fail(f"{what}: give codes or bitmask, not both", entry, "bitmask")
    codes = _codes(entry["codes"], entry, what) if "codes" in entry else None
    bitmask = _bitmask(entry["bitmask"], entry, what) if "bitmask" in entry else None
    nameservers = None
    if "nameservers" in entry:
        from ...sender.config import _nameservers      # the dns section's own validator: same rules
        nameservers = _nameservers(entry, "nameservers", what)
    port = entry.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise fail(f"{what}.port: expected a port number 1-65535, got {port!r}", entry, "port")
    return UrlZone(name.strip().rstrip(".").lower(), zone_type, codes, bitmask, nameservers, port)


def parse_url_section(options) -> UrlConfig:
    """The engines.url section of EngineOptions as a UrlConfig; ConfigError with file:line."""
    section_keys(options, ENGINE_KEYS)
    section = options.section or {}
    zones_raw = section.get("zones") or []
    if not isinstance(zones_raw, list):
        raise fail("engines.url.zones: expected a list of zones", section, "zones")
    zones = tuple(_zone(entry, zones_raw, index) for index, entry in enumerate(zones_raw))
    seen = set()
    for index, zone in enumerate(zones):
        if zone.zone in seen:
            raise fail(f"engines.url.zones: zone {zone.zone!r} is listed twice", zones_raw, index)
        seen.add(zone.zone)
    blocked_raw = section.get("blocked") or []
    if isinstance(blocked_raw, str):
        blocked_raw = [blocked_raw]
    if not isinstance(blocked_raw, list):
        raise fail("engines.url.blocked: expected a list of host globs like \"*.bad.test\"", section, "blocked")
    blocked = []
    for index, glob in enumerate(blocked_raw):
        if not isinstance(glob, str) or not glob.strip() or any(c.isspace() for c in glob.strip()):
            raise fail(f"engines.url.blocked: expected a host glob without spaces, got {glob!r}", blocked_raw, index)
        blocked.append(glob.strip())
    max_urls = section.get("max_urls", DEFAULT_MAX_URLS)
    if isinstance(max_urls, bool) or not isinstance(max_urls, int) or max_urls < 1:
        raise fail(f"engines.url.max_urls: expected a whole number of at least 1, got {max_urls!r}",
                   section, "max_urls")
    return UrlConfig(zones, tuple(blocked), max_urls)
