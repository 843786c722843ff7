"""The antivirus engine: answers the `virus` condition with built-in signatures (default) or clamd.

    engines:
      antivirus: {backend: builtin}
      antivirus: {backend: clamd, socket: unix:/run/clamav/clamd.ctl, max_stream: 25MB, timeout: 30s}

The built-in backend reads the `antivirus` pattern component: ClamAV .hdb
(MD5:size:Name) and .hsb (SHA256:size:Name) hash signatures and YARA rules
(*.yar, *.yara; `meta: category = "..."`). Findings carry the signature
name, its category (categories.py) and the part's path. docs/antivirus.rst
is the administrator's reference.
"""

from __future__ import annotations

import os

from ...errors import ConfigError
from ...settings import parse_size
from ...yamlconf import fail
from .. import component_dir, section_keys
from .builtin import BuiltinEngine
from .categories import CATEGORIES, GRAYWARE_CATEGORIES, TOP_CATEGORIES, category_from_name
from .clamd import DEFAULT_MAX_STREAM, ClamdEngine, ClamdError, parse_address
from .engine import AntivirusEngine
from .signatures import cached_signatures, load_signatures, signature_files

COMPONENT = "antivirus"
BACKENDS = ("builtin", "clamd")


def build(options, settings):
    """The engine of an `engines.antivirus` section; ConfigError with file:line for bad keys or patterns."""
    if options.backend == "builtin":
        section_keys(options, ())
        directory = component_dir(getattr(settings, "patterns_dir", None), COMPONENT)
        return BuiltinEngine(options, cached_signatures(directory))
    if options.backend == "clamd":
        section_keys(options, ("socket", "max_stream"))
        return ClamdEngine(options, _clamd_address(options), _max_stream(options))
    raise fail(f"engines.antivirus.backend must be one of {', '.join(BACKENDS)}, not {options.backend!r}",
               options.section, key="backend")


def _clamd_address(options):
    socket_text = options.get("socket")
    if not isinstance(socket_text, str) or not socket_text.strip():
        raise fail("engines.antivirus.socket: the clamd backend needs the socket clamd listens on "
                   "(unix:/run/clamav/clamd.ctl or inet:3310@127.0.0.1)", options.section,
                   key="socket" if "socket" in (options.section or {}) else "backend")
    try:
        return parse_address(socket_text)
    except ValueError as exc:
        raise fail(f"engines.antivirus.socket: {exc}", options.section, key="socket") from None


def _max_stream(options) -> int:
    value = options.get("max_stream", DEFAULT_MAX_STREAM)
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise fail(f"engines.antivirus.max_stream: {exc}", options.section, key="max_stream") from None
    if size <= 0:
        raise fail("engines.antivirus.max_stream must be more than 0 bytes", options.section, key="max_stream")
    return size


def validate_component(component: str, path: str) -> None:
    """An update's antivirus files in `path` must load on their own (ConfigError with file:line otherwise)."""
    if not os.path.isdir(path):
        raise ConfigError("an antivirus pattern set must be a directory", path)
    if not signature_files(path):
        raise ConfigError("an antivirus pattern set needs at least one *.hdb, *.hsb, *.yar or *.yara file",
                          path)
    load_signatures(path)        # never the cache: a throw-away load of exactly these files


__all__ = ["AntivirusEngine", "BACKENDS", "BuiltinEngine", "CATEGORIES", "COMPONENT", "ClamdEngine",
           "ClamdError", "GRAYWARE_CATEGORIES", "TOP_CATEGORIES", "build", "category_from_name",
           "validate_component"]
