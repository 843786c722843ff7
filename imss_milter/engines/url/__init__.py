"""URL reputation (`url.reputation` condition): URLs of the message against URI blocklists and a local list.

build(options, settings) makes a UrlEngine from the `engines.url` section,
the main config's `dns` section and the `url` pattern component (blocked
list files); validate_component() checks such files before an update
installs them. See docs/url-reputation.rst.
"""

from __future__ import annotations

from ...sender.config import parse_dns
from ...yamlconf import fail
from .. import component_dir
from .blocked import DEFAULT_CATEGORY, BlockedList, load_blocked_dir
from .config import UrlConfig, parse_url_section
from .normalise import registered_domain
from .engine import SCRATCH_FINDINGS, UrlEngine, UrlLookupError

__all__ = ["build", "validate_component", "UrlEngine", "UrlLookupError", "SCRATCH_FINDINGS"]

COMPONENT = "url"


def build(options, settings) -> UrlEngine:
    """The engine of an engines.url section; ConfigError (file:line) for a bad section or blocked list."""
    config = parse_url_section(options)
    dns_config = parse_dns(settings.raw.get("dns"))
    blocked = load_blocked_dir(component_dir(getattr(settings, "patterns_dir", None), COMPONENT))
    add_config_globs(blocked, config, options.section)
    registered_domain("example.com")     # loads the bundled suffix list now, not during the first message
    return UrlEngine(options, config, blocked, dns_config)


def add_config_globs(blocked: BlockedList, config: UrlConfig, section) -> None:
    for index, glob in enumerate(config.blocked):
        try:
            blocked.add(glob, DEFAULT_CATEGORY)
        except ValueError as exc:
            container = section.get("blocked") if section else None
            raise fail(f"engines.url.blocked: {exc}", container, index) from None


def validate_component(component: str, path: str) -> None:
    """Load a url component's blocked-list files; ConfigError (file:line) when one would not load."""
    load_blocked_dir(path)
