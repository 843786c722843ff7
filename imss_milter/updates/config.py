"""The `updates:` section of the main config: where updates come from, the key that signs them,
how many versions to keep, and the daemon's own schedule.

    updates:
      source: https://updates.example.com/imss/      # or a directory
      public_key: /etc/imss-milter/update-key.pem     # PEM file, PEM text, or 32 raw bytes in base64
      keep: 3                                         # versions kept per component (current included)
      components: [dlp, antivirus]                    # default: every component the source offers
      timeout: 60s
      max_size: 512MB                                 # per component
      schedule: {interval: 6h, random_delay: 30m}     # the daemon updates by itself (off by default)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_keys, located, parse_duration, parse_size, require_int, require_mapping, \
    require_str, require_str_list
from ..yamlconf import fail

DEFAULT_KEEP = 3
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_SIZE = 512 * 1024 ** 2
KEYS = ("source", "public_key", "keep", "components", "timeout", "max_size", "schedule")


@dataclass(frozen=True)
class Schedule:
    interval: float
    random_delay: float = 0.0


@dataclass(frozen=True)
class UpdateConfig:
    source: str | None = None
    public_key: str | None = None
    keep: int = DEFAULT_KEEP
    components: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    schedule: Schedule | None = None


def parse_update_config(section) -> UpdateConfig:
    """UpdateConfig from the raw `updates:` mapping (None: defaults); ConfigError with file:line."""
    from ..engines import COMPONENT_MODULES
    if section is None:
        return UpdateConfig()
    if not isinstance(section, dict):
        raise fail("updates: expected a mapping (source, public_key, keep, components, schedule...)", section)
    check_keys(section, KEYS, "updates")
    values: dict = {}
    for key in ("source", "public_key"):
        if section.get(key) is not None:
            values[key] = require_str(section[key], f"updates.{key}", section, key)
    if section.get("public_key") is not None:
        from .manifest import UpdateError, load_public_key
        try:
            load_public_key(values["public_key"])
        except UpdateError as exc:
            raise fail(str(exc), section, "public_key") from None
    if "keep" in section:
        values["keep"] = require_int(section["keep"], "updates.keep", section, "keep", minimum=1)
    if section.get("components") is not None:
        names = require_str_list(section["components"], "updates.components", section, "components")
        for name in names:
            if name not in COMPONENT_MODULES:
                raise fail(f"updates.components: unknown component {name!r} (expected one of: "
                           f"{', '.join(COMPONENT_MODULES)})", section, "components")
        values["components"] = tuple(names)
    if "timeout" in section:
        values["timeout"] = located(parse_duration, section["timeout"], "updates.timeout", section, "timeout")
        if values["timeout"] <= 0:
            raise fail("updates.timeout must be positive", section, "timeout")
    if "max_size" in section:
        values["max_size"] = located(parse_size, section["max_size"], "updates.max_size", section, "max_size")
    if section.get("schedule") is not None:
        values["schedule"] = _schedule(require_mapping(section["schedule"], "updates.schedule", section,
                                                       "schedule"))
    return UpdateConfig(**values)


def _schedule(section) -> Schedule | None:
    check_keys(section, ("interval", "random_delay", "enabled"), "updates.schedule")
    if section.get("enabled", True) is False:
        return None
    if "interval" not in section:
        raise fail("updates.schedule: expected an interval such as 6h", section)
    interval = located(parse_duration, section["interval"], "updates.schedule.interval", section, "interval")
    if interval < 60:
        raise fail("updates.schedule.interval: expected at least 1m", section, "interval")
    delay = located(parse_duration, section.get("random_delay", 0), "updates.schedule.random_delay",
                    section, "random_delay")
    return Schedule(interval, delay)


def update_config(settings) -> UpdateConfig:
    raw = getattr(settings, "raw", None) or {}
    return parse_update_config(raw.get("updates"))
