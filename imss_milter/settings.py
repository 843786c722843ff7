"""The main config (imss-milter.yaml, SPEC §3) as typed, frozen objects.

load_settings() reads the file once, checks every key and value, and
fails fast with a ConfigError naming file, line and the expected form.
Sections owned by other components (engines, sender_filtering, dns,
notifications) are accepted and kept raw — still LDicts that know their
lines — in Settings.raw, for those components to validate.

Also home of the small value parsers every config reader shares:
parse_size(), parse_duration(), and the key/type checks used by the
policy loader.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import ConfigError
from .mime.model import Limits
from .yamlconf import LDict, LList, fail, load_yaml

DEFAULT_CONFIG_PATH = "/etc/imss-milter/imss-milter.yaml"

# Sections parsed elsewhere; kept untouched in Settings.raw.
RAW_SECTIONS = ("engines", "sender_filtering", "dns", "notifications", "updates")

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "K": 1024, "MB": 1024 ** 2, "M": 1024 ** 2,
               "GB": 1024 ** 3, "G": 1024 ** 3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


# ---------------------------------------------------------------- value parsers

def parse_size(value: Any) -> int:
    """Bytes from 1234, "1234", "10KB", "10MB", "1GB" (KB = 1024). ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 1234, 10KB, 10MB or 1GB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a size that is not negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).upper() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    raise ValueError(f"expected a size like 1234, 10KB, 10MB or 1GB, got {value!r}")


def parse_duration(value: Any) -> float:
    """Seconds from a number or "250ms", "30s", "5m", "1h", "7d". ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"expected a duration that is not negative, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match and match.group(2) in _DURATION_UNITS:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {value!r}")


# ---------------------------------------------------------------- checks shared with the rule loader

def type_name(value: Any) -> str:
    """How a YAML value's type reads in an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def check_keys(mapping: LDict, allowed, section: str) -> None:
    """Refuse any key not in allowed, naming the line and the expected keys."""
    for key in mapping:
        if key not in allowed:
            expected = ", ".join(sorted(str(k) for k in allowed))
            raise fail(f"unknown key {key!r} in {section}; expected one of: {expected}", mapping, key)


def require_mapping(value: Any, what: str, container, key) -> LDict:
    """value as an LDict (None counts as empty), else a located error."""
    if value is None:
        empty = LDict()
        empty.file, empty.line = getattr(container, "file", None), _line(container, key)
        return empty
    if not isinstance(value, dict):
        raise fail(f"{what}: expected a mapping, got {type_name(value)}", container, key)
    return value


def require_str(value: Any, what: str, container, key, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        got = "an empty string" if isinstance(value, str) else type_name(value)
        raise fail(f"{what}: expected a non-empty string, got {got}", container, key)
    return value


def require_int(value: Any, what: str, container, key, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{what}: expected a whole number, got {type_name(value)}", container, key)
    if minimum is not None and value < minimum:
        raise fail(f"{what}: expected a number of at least {minimum}, got {value}", container, key)
    return value


def require_str_list(value: Any, what: str, container, key) -> list[str]:
    """A string or a list of strings, as a list."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise fail(f"{what}: expected a list of strings, got {type_name(value)}", container, key)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{what}: expected a non-empty string, got {type_name(item)}", value, index)
    return list(value)


def located(parse, value: Any, what: str, container, key):
    """Run a value parser (parse_size...) and turn its ValueError into a located ConfigError."""
    try:
        return parse(value)
    except ValueError as exc:
        raise fail(f"{what}: {exc}", container, key) from None


def _line(container, key):
    if isinstance(container, LDict):
        return container.key_line(key)
    if isinstance(container, LList) and isinstance(key, int):
        return container.item_line(key)
    return getattr(container, "line", None)


# ---------------------------------------------------------------- settings objects

@dataclass(frozen=True)
class MilterSettings:
    socket: str = "unix:/run/imss-milter/milter.sock"
    timeout: int = 600                      # seconds libmilter waits on the MTA
    on_error: str = "tempfail"              # what an internal failure answers: tempfail | accept
    max_message_size: int = 50 * 1024 ** 2
    spool_memory_limit: int = 1024 ** 2     # body bytes kept in memory before spooling to disk
    workers: int = 0                        # scanning processes; 0 = one per CPU
    user: str = "imss-milter"              # "" = do not switch user
    group: str | None = None
    pid_file: str = "/run/imss-milter/imss-milter.pid"
    socket_mode: int = 0o660                # unix socket permissions; the MTA reaches it through the group


@dataclass(frozen=True)
class AreaSettings:
    retention_days: int = 30


@dataclass(frozen=True)
class LogSettings:
    target: str = "stderr"                  # stderr | syslog
    level: str = "info"
    facility: str = "mail"


DEFAULT_QUARANTINE_RETENTION = 30
DEFAULT_ARCHIVE_RETENTION = 365
DEFAULT_LOG_RETENTION = 90


@dataclass(frozen=True)
class Settings:
    source: str | None = None               # the file read, None for embedded defaults
    milter: MilterSettings = field(default_factory=MilterSettings)
    internal_domains: tuple[str, ...] = ()
    rules_dir: str = "/etc/imss-milter/rules"
    patterns_dir: str = "/var/lib/imss-milter/patterns"
    state_dir: str = "/var/lib/imss-milter"
    metrics_listen: str | None = "127.0.0.1:9899"
    quarantine_areas: Mapping[str, AreaSettings] = field(
        default_factory=lambda: MappingProxyType({"default": AreaSettings(DEFAULT_QUARANTINE_RETENTION)}))
    archive_areas: Mapping[str, AreaSettings] = field(default_factory=lambda: MappingProxyType({}))
    release_smtp: tuple[str, int] = ("127.0.0.1", 10026)
    logging: LogSettings = field(default_factory=LogSettings)
    log_retention_days: int = DEFAULT_LOG_RETENTION    # tracking records and events (`logs.retention_days`)
    limits: Limits = field(default_factory=Limits)
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def quarantine_area(self, name: str) -> AreaSettings:
        """Options of a quarantine area; areas named only in rules get the default retention."""
        return self.quarantine_areas.get(name) or AreaSettings(DEFAULT_QUARANTINE_RETENTION)

    def archive_area(self, name: str) -> AreaSettings:
        return self.archive_areas.get(name) or AreaSettings(DEFAULT_ARCHIVE_RETENTION)


# ---------------------------------------------------------------- loading

_TOP_KEYS = ("milter", "internal_domains", "rules_dir", "patterns_dir", "state_dir", "metrics",
             "quarantine", "archive", "release", "logging", "logs", "limits") + RAW_SECTIONS
_SOCKET_RE = re.compile(r"^(?:(?:unix|local):/\S+|inet6?:\d{1,5}(?:@\S+)?)$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                        r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_AREA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_FACILITIES = ("mail", "daemon", "user") + tuple(f"local{i}" for i in range(8))
_SIZE_LIMITS = ("archive_max_expanded",)
_DURATION_LIMITS = ("regex_timeout",)


def load_settings(path: str | None = None) -> Settings:
    """Settings from path; with None, /etc/imss-milter/imss-milter.yaml if present, else defaults."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG_PATH):
            return Settings()
        path = DEFAULT_CONFIG_PATH
    data = load_yaml(path)
    if data is None:
        return Settings(source=path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings at the top, got {type_name(data)}",
                          path, getattr(data, "line", 1))
    return settings_from_mapping(data, source=path)


def settings_from_mapping(data: LDict, source: str | None = None) -> Settings:
    """Validate a parsed config mapping into Settings (load_settings without the file reading)."""
    check_keys(data, _TOP_KEYS, "the main config")
    values: dict[str, Any] = {"source": source}
    if "milter" in data:
        values["milter"] = _milter(require_mapping(data["milter"], "milter", data, "milter"))
    if "internal_domains" in data:
        values["internal_domains"] = _domains(data["internal_domains"], data)
    for key in ("rules_dir", "patterns_dir", "state_dir"):
        if key in data:
            values[key] = _abs_path(data[key], key, data, key)
    if "metrics" in data:
        values["metrics_listen"] = _metrics(data["metrics"], data)
    if "quarantine" in data:
        values["quarantine_areas"] = _areas(data["quarantine"], "quarantine", data,
                                            DEFAULT_QUARANTINE_RETENTION, default_area=True)
    if "archive" in data:
        values["archive_areas"] = _areas(data["archive"], "archive", data, DEFAULT_ARCHIVE_RETENTION)
    if "release" in data:
        release = require_mapping(data["release"], "release", data, "release")
        check_keys(release, ("smtp",), "release")
        if "smtp" in release:
            values["release_smtp"] = _host_port(release["smtp"], "release.smtp", release, "smtp")
    if "logging" in data:
        values["logging"] = _logging(require_mapping(data["logging"], "logging", data, "logging"))
    if "logs" in data:
        logs = require_mapping(data["logs"], "logs", data, "logs")
        check_keys(logs, ("retention_days",), "logs")
        if "retention_days" in logs:
            values["log_retention_days"] = require_int(logs["retention_days"], "logs.retention_days", logs,
                                                       "retention_days", minimum=1)
    if "limits" in data:
        values["limits"] = limits_from_mapping(require_mapping(data["limits"], "limits", data, "limits"))
    raw = {}
    for key in RAW_SECTIONS:
        if key in data:
            raw[key] = require_mapping(data[key], key, data, key)
    values["raw"] = MappingProxyType(raw)
    return Settings(**values)


def _milter(section: LDict) -> MilterSettings:
    check_keys(section, [f.name for f in dataclasses.fields(MilterSettings)], "milter")
    values: dict[str, Any] = {}
    if "socket" in section:
        socket = require_str(section["socket"], "milter.socket", section, "socket")
        if not _SOCKET_RE.match(socket):
            raise fail(f"milter.socket: expected unix:/path, local:/path, inet:PORT@HOST or "
                       f"inet6:PORT@HOST, got {socket!r}", section, "socket")
        values["socket"] = socket
    if "timeout" in section:
        values["timeout"] = int(located(parse_duration, section["timeout"], "milter.timeout", section, "timeout"))
    if "on_error" in section:
        if section["on_error"] not in ("tempfail", "accept"):
            raise fail(f"milter.on_error: expected tempfail or accept, got {section['on_error']!r}",
                       section, "on_error")
        values["on_error"] = section["on_error"]
    for key in ("max_message_size", "spool_memory_limit"):
        if key in section:
            values[key] = located(parse_size, section[key], f"milter.{key}", section, key)
    if "workers" in section:
        values["workers"] = require_int(section["workers"], "milter.workers", section, "workers", minimum=0)
    if "user" in section:
        # "" (or null) keeps the user the daemon was started as, e.g. in tests or containers
        user = section["user"]
        values["user"] = "" if user is None else require_str(user, "milter.user", section, "user", allow_empty=True)
    if "group" in section:
        values["group"] = (None if section["group"] is None
                           else require_str(section["group"], "milter.group", section, "group"))
    if "pid_file" in section:
        values["pid_file"] = _abs_path(section["pid_file"], "milter.pid_file", section, "pid_file")
    if "socket_mode" in section:
        mode = section["socket_mode"]
        # YAML reads an unquoted 0660 as the integer 432: only a quoted string is unambiguous
        if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
            raise fail(f"milter.socket_mode: expected an octal mode such as \"0660\", got {section['socket_mode']!r}",
                       section, "socket_mode")
        values["socket_mode"] = int(mode, 8)
    return MilterSettings(**values)


def _domains(value: Any, data: LDict) -> tuple[str, ...]:
    domains = []
    items = require_str_list(value, "internal_domains", data, "internal_domains")
    for index, item in enumerate(items):
        domain = item.strip().lower().lstrip("@").rstrip(".")
        if not _DOMAIN_RE.match(domain):
            container, key = (value, index) if isinstance(value, list) else (data, "internal_domains")
            raise fail(f"internal_domains: expected a domain name like example.com, got {item!r}",
                       container, key)
        domains.append(domain)
    return tuple(domains)


def _abs_path(value: Any, what: str, container, key) -> str:
    path = require_str(value, what, container, key)
    if not path.startswith("/"):
        raise fail(f"{what}: expected an absolute path, got {path!r}", container, key)
    return path


def _metrics(value: Any, data: LDict) -> str | None:
    section = require_mapping(value, "metrics", data, "metrics")
    check_keys(section, ("listen",), "metrics")
    listen = section.get("listen", "127.0.0.1:9899")
    if listen is None or listen is False or listen == "":
        return None   # metrics switched off
    host, port = _host_port(listen, "metrics.listen", section, "listen")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(value: Any, what: str, container, key) -> tuple[str, int]:
    """"host:port" or "[v6]:port" as (host, port)."""
    text = require_str(value, what, container, key)
    match = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$", text) or re.match(r"^([^\s:\[\]]+):(\d{1,5})$", text)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise fail(f"{what}: expected HOST:PORT like 127.0.0.1:10026, got {text!r}", container, key)
    return match.group(1), int(match.group(2))


def _areas(value: Any, what: str, data: LDict, retention: int, default_area: bool = False):
    section = require_mapping(value, what, data, what)
    check_keys(section, ("areas",), what)
    areas: dict[str, AreaSettings] = {}
    if default_area:
        areas["default"] = AreaSettings(retention)
    table = require_mapping(section.get("areas"), f"{what}.areas", section, "areas")
    for name, options in table.items():
        if not isinstance(name, str) or not _AREA_NAME_RE.match(name):
            raise fail(f"{what}.areas: expected an area name of letters, digits, '_', '.', '-', got {name!r}",
                       table, name)
        options = require_mapping(options, f"{what}.areas.{name}", table, name)
        check_keys(options, ("retention_days",), f"{what}.areas.{name}")
        days = options.get("retention_days", retention)
        areas[name] = AreaSettings(require_int(days, f"{what}.areas.{name}.retention_days", options,
                                               "retention_days", minimum=1))
    return MappingProxyType(areas)


def _logging(section: LDict) -> LogSettings:
    check_keys(section, ("target", "level", "facility"), "logging")
    choices = {"target": ("stderr", "syslog"), "level": _LOG_LEVELS, "facility": _FACILITIES}
    values = {}
    for key, allowed in choices.items():
        if key in section:
            value = section[key]
            if isinstance(value, str):
                value = value.lower()
            if value not in allowed:
                raise fail(f"logging.{key}: expected one of {', '.join(allowed)}, got {section[key]!r}",
                           section, key)
            values[key] = value
    return LogSettings(**values)


def limits_from_mapping(section: LDict) -> Limits:
    """The `limits:` section as mime.model.Limits (sizes accept units, regex_timeout a duration)."""
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    check_keys(section, fields, "limits")
    values: dict[str, Any] = {}
    for key, value in section.items():
        what = f"limits.{key}"
        if key in _SIZE_LIMITS:
            values[key] = located(parse_size, value, what, section, key)
        elif key in _DURATION_LIMITS:
            seconds = located(parse_duration, value, what, section, key)
            if seconds <= 0:
                raise fail(f"{what}: expected a duration above zero", section, key)
            values[key] = seconds
        else:
            values[key] = require_int(value, what, section, key, minimum=1)
    return Limits(**values)
