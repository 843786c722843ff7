"""The spam engine: answers `spam: {score: ...}` and `spam: {level: ...}` from one score per message.

Backends: builtin (scored rules of the `spam` pattern component, plus DNSBL
and URL findings) and rspamd (an rspamd worker over HTTP). Both share the
sender lists, exemptions, levels and the optional score header (engine.py).
"""

from __future__ import annotations

from .. import component_dir, section_keys
from ...errors import ConfigError
from ...yamlconf import fail
from .builtin import BuiltinSpamEngine
from .config import SHARED_KEYS, parse_spam_section
from .engine import SpamEngine, SpamResult
from .rspamd import DEFAULT_URL, RspamdClient, RspamdSpamEngine, parse_url
from .rules import load_rules, rule_files

COMPONENT = "spam"
BACKENDS = ("builtin", "rspamd")
RSPAMD_KEYS = ("url",)


def build(options, settings) -> SpamEngine:
    """The engine of an `engines.spam` section (no service is contacted here); ConfigError with file:line."""
    regex_timeout = settings.limits.regex_timeout
    if options.backend == "builtin":
        section_keys(options, SHARED_KEYS)
        config = parse_spam_section(options.section, regex_timeout, input_defaults=True)
        rules = load_rules(component_dir(settings.patterns_dir, COMPONENT))
        return BuiltinSpamEngine(config, rules, options)
    if options.backend == "rspamd":
        section_keys(options, SHARED_KEYS + RSPAMD_KEYS)
        config = parse_spam_section(options.section, regex_timeout, input_defaults=False)
        url = options.get("url", DEFAULT_URL)
        try:
            parse_url(url if isinstance(url, str) else "")
        except ValueError as exc:
            raise fail(f"engines.spam.url: {exc}", options.section, "url") from None
        return RspamdSpamEngine(config, RspamdClient(url, options.timeout), options)
    raise fail(f"engines.spam.backend: expected one of {', '.join(BACKENDS)}, got {options.backend!r}",
               options.section, "backend")


def validate_component(component: str, path: str) -> None:
    """A `spam` pattern version must hold at least one rule file and every rule must compile."""
    if not rule_files(path):
        raise ConfigError("a spam pattern set needs at least one *.yaml rule file", path)
    load_rules(path)


__all__ = ["build", "validate_component", "SpamEngine", "SpamResult", "BuiltinSpamEngine", "RspamdSpamEngine"]
