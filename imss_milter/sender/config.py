"""Validate the `sender_filtering` and `dns` config sections into frozen objects (SPEC §6).

Every mistake raises ConfigError naming the file, the line and the expected
form; unknown keys are refused rather than skipped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..yamlconf import fail

PROFILER_KINDS = ("dha", "bounce", "spam", "virus")

_XCODE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


def parse_duration(value: Any) -> float | None:
    """Seconds from `30s`, `5m`, `1h`, `7d` or a plain number (the project-wide rule); None when malformed."""
    from ..settings import parse_duration as shared_parse_duration  # late: settings may one day import us

    try:
        return shared_parse_duration(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Reply:
    """What the milter answers: the action and its SMTP reply."""

    action: str              # reject | tempfail | tag
    code: str = ""
    xcode: str = ""
    text: str = ""


DEFAULT_REPLIES = {
    "reject": Reply("reject", "554", "5.7.1", "Access denied"),
    "tempfail": Reply("tempfail", "451", "4.7.1", "Service temporarily unavailable, try again later"),
    "tag": Reply("tag"),
}


@dataclass(frozen=True)
class CodeRange:
    """A range of DNSBL answer addresses (as integers) and the category it means."""

    low: int
    high: int
    category: str

    def covers(self, address: int) -> bool:
        return self.low <= address <= self.high


@dataclass(frozen=True)
class ZoneConfig:
    zone: str
    codes: tuple[CodeRange, ...] | None       # None: any 127/8 answer lists, category = zone name
    reply: Reply
    nameservers: tuple[str, ...] | None = None  # overrides dns.nameservers for this zone
    port: int | None = None


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] | None = None  # None: the system resolver
    port: int = 53
    timeout: float = 2.0


@dataclass(frozen=True)
class ProfilerRule:
    kind: str
    threshold: int
    window: float
    block: float
    reply: Reply


@dataclass(frozen=True)
class LdapConfig:
    url: str
    base: str
    filter: str = "(mail=%s)"
    bind_dn: str | None = None
    bind_password: str | None = None
    cache_ttl: float = 300.0
    negative_ttl: float = 60.0
    timeout: float = 5.0


@dataclass(frozen=True)
class DirectoryConfig:
    files: tuple[tuple[str, Any, Any], ...] = ()   # (path, container, key) so file errors can point at the config line
    ldap: LdapConfig | None = None
    domains: tuple[str, ...] = ()
    on_error: str = "continue"


@dataclass(frozen=True)
class StateConfig:
    backend: str = "sqlite"
    path: str | None = None         # sqlite file; default state_dir/sender.sqlite
    url: str | None = None          # redis URL
    prefix: str = "imss:sender:"
    timeout: float = 1.0
    on_error: str = "continue"


@dataclass(frozen=True)
class SenderConfig:
    enabled: bool = False
    approved_hosts: tuple[str, ...] = ()
    blocked_hosts: tuple[str, ...] = ()
    approved_senders: tuple[str, ...] = ()
    blocked_senders: tuple[str, ...] = ()
    zones: tuple[ZoneConfig, ...] = ()
    directory: DirectoryConfig | None = None
    profiler: dict[str, ProfilerRule] = field(default_factory=dict)
    state: StateConfig = field(default_factory=StateConfig)


# --- small validators -------------------------------------------------------

def _mapping(value, container, key, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise fail(f"{what}: expected a mapping", container, key)
    return value


def _refuse_unknown(section: Mapping, allowed: tuple[str, ...], what: str) -> None:
    for key in section:
        if key not in allowed:
            raise fail(f"{what}: unknown key {key!r} (expected one of: {', '.join(allowed)})", section, key)


def _string_list(section: Mapping, key: str, what: str) -> tuple[str, ...]:
    value = section.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise fail(f"{what}.{key}: expected a list of strings", section, key)
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{what}.{key}: expected a non-empty string", value if hasattr(value, "item_line") else section,
                       index if hasattr(value, "item_line") else key)
        result.append(item.strip())
    return tuple(result)


def _duration(section: Mapping, key: str, what: str, default: float | None = None) -> float:
    if key not in section:
        if default is None:
            raise fail(f"{what}: missing {key!r} (a duration like 30s, 5m, 1h, 7d)", section)
        return default
    seconds = parse_duration(section[key])
    if seconds is None:
        raise fail(f"{what}.{key}: expected a duration like 30s, 5m, 1h, 7d, got {section[key]!r}", section, key)
    return seconds


def _positive_int(section: Mapping, key: str, what: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(f"{what}.{key}: expected a whole number of at least 1, got {value!r}", section, key)
    return value


def _choice(section: Mapping, key: str, choices: tuple[str, ...], default: str, what: str) -> str:
    value = section.get(key, default)
    if value not in choices:
        raise fail(f"{what}.{key}: expected one of {', '.join(choices)}, got {value!r}", section, key)
    return value


def _port(value, container, key, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise fail(f"{what}: expected a port number 1-65535, got {value!r}", container, key)
    return value


def _nameservers(section: Mapping, key: str, what: str) -> tuple[str, ...]:
    servers = _string_list(section, key, what)
    if not servers:
        raise fail(f"{what}.{key}: expected at least one nameserver IP address", section, key)
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise fail(f"{what}.{key}: expected IP addresses, got {server!r}", section, key) from None
    return servers


def parse_reply(value, container, key, allowed: tuple[str, ...], what: str) -> Reply:
    """An action: `reject`, or `{reject: {code, xcode, text}}` (same for tempfail; `tag` takes no reply)."""
    if isinstance(value, str):
        if value not in allowed:
            raise fail(f"{what}: expected one of {', '.join(allowed)}, got {value!r}", container, key)
        return DEFAULT_REPLIES[value]
    if not isinstance(value, Mapping) or len(value) != 1:
        raise fail(f"{what}: expected one of {', '.join(allowed)} or a mapping like "
                   "{reject: {code: 554, xcode: 5.7.1, text: ...}}", container, key)
    (name, options), = value.items()
    if name not in allowed:
        raise fail(f"{what}: expected one of {', '.join(allowed)}, got {name!r}", value, name)
    default = DEFAULT_REPLIES[name]
    if options is None or name == "tag":
        if options not in (None, {}, True):
            raise fail(f"{what}: {name} takes no options", value, name)
        return default
    options = _mapping(options, value, name, f"{what}.{name}")
    _refuse_unknown(options, ("code", "xcode", "text"), f"{what}.{name}")
    first_digit = "5" if name == "reject" else "4"
    code = str(options.get("code", default.code))
    if not re.fullmatch(rf"{first_digit}\d\d", code):
        raise fail(f"{what}.{name}.code: expected a {first_digit}xx SMTP code, got {code!r}", options, "code")
    xcode = str(options.get("xcode", f"{first_digit}{default.xcode[1:]}"))
    if not _XCODE.match(xcode) or xcode[0] != first_digit:
        raise fail(f"{what}.{name}.xcode: expected an enhanced status code like {first_digit}.7.1, got {xcode!r}",
                   options, "xcode")
    text = options.get("text", default.text)
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        raise fail(f"{what}.{name}.text: expected one line of text", options, "text")
    return Reply(name, code, xcode, text)


# a listing answers inside 127.0.0.0/8; 127.255.255.0/24 is how a list refuses our resolver
LISTING_NET = ipaddress.IPv4Network("127.0.0.0/8")
REFUSAL_NET = ipaddress.IPv4Network("127.255.255.0/24")


def parse_codes(raw: Mapping, what: str, category_of, example: str) -> tuple[CodeRange, ...]:
    """The `codes` mapping of a DNS blocklist zone (answer address or range -> category), for
    sender filtering and the URL engine alike: each key must be an address or range inside
    127.0.0.0/8 and clear of 127.255.255.0/24, or the answer could never be a listing.
    category_of(value, raw, key, what) validates a category the way its section names them;
    example: an answer address for the error messages (127.0.0.2)."""
    ranges = []
    for key, category in raw.items():
        bounds = parse_code_key(key)
        if bounds is None:
            raise fail(f"{what}.codes: expected an address like {example} or a range like "
                       f"{example.rsplit('.', 1)[0]}.4-7, got {key!r}", raw, key)
        problem = code_problem(*bounds)
        if problem:
            raise fail(f"{what}.codes: {key!r} {problem}", raw, key)
        ranges.append(CodeRange(bounds[0], bounds[1], category_of(category, raw, key, f"{what}.codes.{key}")))
    return tuple(ranges)


def code_problem(low: int, high: int) -> str | None:
    """Why an answer range can never be a listing, or None when it can."""
    first, last = ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)
    if first not in LISTING_NET or last not in LISTING_NET:
        return "is outside 127.0.0.0/8: a DNS blocklist lists with 127.x.y.z answers"
    if low <= int(REFUSAL_NET.broadcast_address) and high >= int(REFUSAL_NET.network_address):
        return ("reaches into 127.255.255.0/24: those answers mean the list refused our resolver, "
                "never a listing")
    return None


def _zone_category(value, container, key, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what}: expected a category name", container, key)
    return value.strip()


def parse_code_key(key: Any) -> tuple[int, int] | None:
    """`"127.0.0.2"` or `"127.0.0.4-7"` or `"127.0.0.4-127.0.0.7"` → (low, high) as integers; None if malformed."""
    if not isinstance(key, str):
        return None
    text = key.strip()
    low_text, dash, high_text = text.partition("-")
    try:
        low = ipaddress.IPv4Address(low_text.strip())
    except ValueError:
        return None
    if not dash:
        return int(low), int(low)
    high_text = high_text.strip()
    if high_text.isdigit():
        # shorthand for the last octet, as DNSBL documentation writes it
        last = int(high_text)
        if last > 255:
            return None
        high = ipaddress.IPv4Address(int(low) & 0xFFFFFF00 | last)
    else:
        try:
            high = ipaddress.IPv4Address(high_text)
        except ValueError:
            return None
    if int(high) < int(low):
        return None
    return int(low), int(high)


def _zone(entry, container, index, what: str) -> ZoneConfig:
    entry = _mapping(entry, container, index, what)
    _refuse_unknown(entry, ("zone", "codes", "action", "nameservers", "port"), what)
    zone = entry.get("zone")
    if not isinstance(zone, str) or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?", zone.strip()):
        raise fail(f"{what}.zone: expected a DNS zone name like zen.example.test, got {zone!r}", entry,
                   "zone" if "zone" in entry else None)
    zone = zone.strip().rstrip(".").lower()
    codes = None
    if "codes" in entry:
        codes = parse_codes(_mapping(entry["codes"], entry, "codes", f"{what}.codes"), what, _zone_category,
                            "127.0.0.2")
    reply = parse_reply(entry.get("action", "reject"), entry, "action" if "action" in entry else None,
                        ("reject", "tempfail", "tag"), f"{what}.action")
    if reply == DEFAULT_REPLIES["reject"]:
        reply = Reply("reject", "554", "5.7.1", f"Service unavailable; client listed by {zone}")
    elif reply == DEFAULT_REPLIES["tempfail"]:
        reply = Reply("tempfail", "451", "4.7.1", f"Service temporarily unavailable; client listed by {zone}")
    nameservers = _nameservers(entry, "nameservers", what) if "nameservers" in entry else None
    port = _port(entry["port"], entry, "port", f"{what}.port") if "port" in entry else None
    return ZoneConfig(zone, codes, reply, nameservers, port)


def parse_dns(section: Mapping | None) -> DnsConfig:
    """The `dns` section; None → the system resolver with a 2 s budget."""
    if section is None:
        return DnsConfig()
    section = _mapping(section, None, None, "dns")
    _refuse_unknown(section, ("nameservers", "port", "timeout"), "dns")
    nameservers = _nameservers(section, "nameservers", "dns") if "nameservers" in section else None
    port = _port(section["port"], section, "port", "dns.port") if "port" in section else 53
    timeout = _duration(section, "timeout", "dns", 2.0)
    if timeout <= 0:
        raise fail("dns.timeout: expected a duration above zero", section, "timeout")
    return DnsConfig(nameservers, port, timeout)


def _profiler(section: Mapping) -> dict[str, ProfilerRule]:
    what = "sender_filtering.ip_profiler"
    _refuse_unknown(section, PROFILER_KINDS, what)
    rules = {}
    for kind, entry in section.items():
        where = f"{what}.{kind}"
        entry = _mapping(entry, section, kind, where)
        _refuse_unknown(entry, ("threshold", "window", "block", "action"), where)
        threshold = _positive_int(entry, "threshold", where)
        window = _duration(entry, "window", where)
        block = _duration(entry, "block", where)
        if window <= 0 or block <= 0:
            raise fail(f"{where}: window and block must be above zero", entry)
        reply = parse_reply(entry.get("action", "tempfail"), entry, "action" if "action" in entry else None,
                            ("reject", "tempfail"), f"{where}.action")
        if reply in (DEFAULT_REPLIES["reject"], DEFAULT_REPLIES["tempfail"]):
            # a default reply that says why, so the blocked client's admin can act on it
            text = f"Client blocked by IP Profiler ({kind})"
            reply = Reply(reply.action, "554" if reply.action == "reject" else "421",
                          "5.7.1" if reply.action == "reject" else "4.7.1", text)
        rules[kind] = ProfilerRule(kind, threshold, window, block, reply)
    return rules


def _directory(section: Mapping) -> DirectoryConfig:
    what = "sender_filtering.directory"
    _refuse_unknown(section, ("files", "ldap", "domains", "on_error"), what)
    files = []
    raw_files = section.get("files")
    if raw_files is not None:
        if isinstance(raw_files, str):
            files.append((raw_files, section, "files"))
        elif isinstance(raw_files, list):
            for index, path in enumerate(raw_files):
                if not isinstance(path, str) or not path.strip():
                    raise fail(f"{what}.files: expected file paths", raw_files, index)
                files.append((path.strip(), raw_files, index))
        else:
            raise fail(f"{what}.files: expected a list of file paths", section, "files")
    ldap = None
    if "ldap" in section:
        entry = _mapping(section["ldap"], section, "ldap", f"{what}.ldap")
        _refuse_unknown(entry, ("url", "base", "filter", "bind_dn", "bind_password", "cache_ttl",
                                "negative_ttl", "timeout"), f"{what}.ldap")
        for required in ("url", "base"):
            if not isinstance(entry.get(required), str) or not entry[required].strip():
                raise fail(f"{what}.ldap: expected {required!r} as a string", entry,
                           required if required in entry else None)
        if not re.match(r"^ldaps?://", entry["url"]):
            raise fail(f"{what}.ldap.url: expected ldap://host[:port] or ldaps://...", entry, "url")
        search_filter = entry.get("filter", "(mail=%s)")
        if not isinstance(search_filter, str) or not re.search(r"%[sud]", search_filter) \
                or not search_filter.startswith("("):
            raise fail(f"{what}.ldap.filter: expected an LDAP filter using %s (address), %u (local part) "
                       "or %d (domain), like (mail=%s)", entry, "filter")
        for optional in ("bind_dn", "bind_password"):
            if optional in entry and not isinstance(entry[optional], str):
                raise fail(f"{what}.ldap.{optional}: expected a string", entry, optional)
        ldap = LdapConfig(
            url=entry["url"].strip(), base=entry["base"].strip(), filter=search_filter,
            bind_dn=entry.get("bind_dn"), bind_password=entry.get("bind_password"),
            cache_ttl=_duration(entry, "cache_ttl", f"{what}.ldap", 300.0),
            negative_ttl=_duration(entry, "negative_ttl", f"{what}.ldap", 60.0),
            timeout=_duration(entry, "timeout", f"{what}.ldap", 5.0) or 5.0,
        )
    domains = tuple(d.lower().lstrip("@") for d in _string_list(section, "domains", what))
    on_error = _choice(section, "on_error", ("continue", "tempfail"), "continue", what)
    return DirectoryConfig(tuple(files), ldap, domains, on_error)


def _state(section: Mapping) -> StateConfig:
    what = "sender_filtering.state"
    _refuse_unknown(section, ("backend", "path", "url", "prefix", "timeout", "on_error"), what)
    backend = _choice(section, "backend", ("sqlite", "redis"), "sqlite", what)
    url = section.get("url")
    if backend == "redis":
        if not isinstance(url, str) or not re.match(r"^(redis|rediss|unix)://", url):
            raise fail(f"{what}.url: expected a Redis URL like redis://127.0.0.1:6379/0", section,
                       "url" if "url" in section else None)
    elif url is not None:
        raise fail(f"{what}.url: only used with backend: redis", section, "url")
    path = section.get("path")
    if path is not None and (backend != "sqlite" or not isinstance(path, str) or not path.strip()):
        raise fail(f"{what}.path: expected a file path (sqlite backend only)", section, "path")
    prefix = section.get("prefix", "imss:sender:")
    if not isinstance(prefix, str):
        raise fail(f"{what}.prefix: expected a string", section, "prefix")
    timeout = _duration(section, "timeout", what, 1.0)
    on_error = _choice(section, "on_error", ("continue", "tempfail"), "continue", what)
    return StateConfig(backend, path, url, prefix, timeout or 1.0, on_error)


def _validate_host_patterns(section: Mapping, key: str) -> tuple[str, ...]:
    patterns = _string_list(section, key, "sender_filtering")
    for pattern in patterns:
        if looks_like_ip(pattern):
            try:
                ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                raise fail(f"sender_filtering.{key}: {pattern!r} is not a valid IP address or CIDR", section,
                           key) from None
        elif not re.fullmatch(r"[A-Za-z0-9*?._\[\]!-]+", pattern):
            raise fail(f"sender_filtering.{key}: expected IP addresses, CIDRs or hostname globs, got {pattern!r}",
                       section, key)
    return patterns


def looks_like_ip(pattern: str) -> bool:
    """IP/CIDR rather than a hostname glob: has a colon, or is digits, dots and a /prefix."""
    return ":" in pattern or bool(re.fullmatch(r"[\d.]+(/\d+)?", pattern))


def parse_sender_filtering(section: Mapping | None) -> SenderConfig:
    """The `sender_filtering` section; None → disabled."""
    if section is None:
        return SenderConfig(enabled=False)
    what = "sender_filtering"
    section = _mapping(section, None, None, what)
    _refuse_unknown(section, ("enabled", "approved_hosts", "blocked_hosts", "approved_senders", "blocked_senders",
                              "reputation", "directory", "ip_profiler", "state"), what)
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail(f"{what}.enabled: expected true or false", section, "enabled")
    zones: list[ZoneConfig] = []
    if section.get("reputation") is not None:
        reputation = _mapping(section["reputation"], section, "reputation", f"{what}.reputation")
        _refuse_unknown(reputation, ("zones",), f"{what}.reputation")
        raw_zones = reputation.get("zones") or []
        if not isinstance(raw_zones, list):
            raise fail(f"{what}.reputation.zones: expected a list of zones", reputation, "zones")
        for index, entry in enumerate(raw_zones):
            zones.append(_zone(entry, raw_zones, index, f"{what}.reputation.zones[{index}]"))
        names = [z.zone for z in zones]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise fail(f"{what}.reputation.zones: zone {name!r} is listed twice", raw_zones, index)
    directory = None
    if section.get("directory") is not None:
        directory = _directory(_mapping(section["directory"], section, "directory", f"{what}.directory"))
    profiler = {}
    if section.get("ip_profiler") is not None:
        profiler = _profiler(_mapping(section["ip_profiler"], section, "ip_profiler", f"{what}.ip_profiler"))
    state = StateConfig()
    if section.get("state") is not None:
        state = _state(_mapping(section["state"], section, "state", f"{what}.state"))
    return SenderConfig(
        enabled=enabled,
        approved_hosts=_validate_host_patterns(section, "approved_hosts"),
        blocked_hosts=_validate_host_patterns(section, "blocked_hosts"),
        approved_senders=_string_list(section, "approved_senders", what),
        blocked_senders=_string_list(section, "blocked_senders", what),
        zones=tuple(zones),
        directory=directory,
        profiler=profiler,
        state=state,
    )
