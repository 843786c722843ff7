"""Detectors: each reports named findings; rules decide the actions.

An engine is built from its `engines.<name>` section of the main config
(build_engines) and answers the rule conditions mapped to it in
policy.conditions.ENGINE_OF_CONDITION:

    engine.check(condition, argument, model, envelope, scratch) -> list[dict]

Each finding is a dict with at least "detail"; engines also give "name"
(e.g. the signature), "category" and "part" (the part's path, as in
`scan --json` attachments). An empty list means the condition does not
hold. `scratch` is per message: an engine that is asked several times
scans once.

An engine may also have `prepare(model, envelope, scratch)`: the heavy
work (scanning every part, DNS lookups). The runtime calls it for every
engine some policy with a matching route needs, concurrently, before the
rules are evaluated, with the engine's `timeout`; an exception there is
raised again when a condition asks the engine, so it is answered per the
engine's `on_error` only when a rule actually depends on it.

Options every engine section takes: `backend`, `on_error` (tempfail:
the milter answers per milter.on_error, i.e. the MTA retries; accept: the
engine's conditions do not hold and the failure is logged) and `timeout`.
The rest of a section belongs to the engine's module, which reports bad
keys with file and line (yamlconf.fail).

Pattern data (signatures, rules, lists) is a component read from
<patterns_dir>/current/<component> when an update installed one, else from
the seed set shipped in patterns/<component> (component_dir). A module
that owns components has `validate_component(component, path)` that loads
the files in a throw-away engine and raises ConfigError when they would
not load: the update command runs it before a version may become current.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..settings import parse_duration
from ..yamlconf import LDict, fail

# engine name -> module; a module has build(options, settings) -> engine
ENGINE_MODULES = {
    "antivirus": "imss_milter.engines.antivirus",
    "spam": "imss_milter.engines.spam",
    "url": "imss_milter.engines.url",
}
# pattern component -> module with validate_component(component, path)
COMPONENT_MODULES = {
    "antivirus": "imss_milter.engines.antivirus",
    "spam": "imss_milter.engines.spam",
    "url": "imss_milter.engines.url",
    "dlp": "imss_milter.engines.dlp.patterns",
}
# the embedded defaults (SPEC §1): with no engines section, the built-in signature engine and spam
# rules run; services such as clamd or rspamd are opt-in backends
DEFAULT_SECTIONS: dict[str, dict] = {"antivirus": {"backend": "builtin"}, "spam": {"backend": "builtin"}}
ON_ERROR = ("tempfail", "accept")
COMMON_KEYS = ("backend", "on_error", "timeout", "enabled")
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class EngineOptions:
    """An engine section: the common options, and the section itself for the module's own keys."""

    name: str
    backend: str = "builtin"
    on_error: str = "tempfail"
    timeout: float = DEFAULT_TIMEOUT
    section: Any = field(default_factory=dict)     # LDict from the config (file:line), or a plain dict

    def get(self, key: str, default=None):
        return self.section.get(key, default) if self.section is not None else default


def shipped_patterns_dir() -> str:
    """The patterns/ directory installed with the package (the seed set)."""
    resources = importlib.resources.files("imss_milter.patterns")
    try:
        return os.fspath(resources)
    except TypeError:
        # a namespace package (no __init__.py) gives a MultiplexedPath: take its first directory
        return next(iter(importlib.import_module("imss_milter.patterns").__path__))


def component_dir(patterns_dir: str | None, component: str) -> str:
    """Where a component's files are read from: the installed current version, else the shipped seed."""
    if patterns_dir:
        installed = os.path.join(patterns_dir, "current", component)
        if os.path.isdir(installed):
            return installed
    return os.path.join(shipped_patterns_dir(), component)


def parse_engine_sections(raw) -> dict[str, EngineOptions]:
    """The `engines:` section as EngineOptions per engine (defaults filled in); ConfigError with file:line."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise fail("engines must be a mapping of engine name to its options", raw)
    options: dict[str, EngineOptions] = {}
    names = list(raw) + [name for name in DEFAULT_SECTIONS if name not in raw]
    for name in names:
        section = raw.get(name, DEFAULT_SECTIONS.get(name))
        if name not in ENGINE_MODULES:
            raise fail(f"unknown engine {name!r} (expected one of: {', '.join(ENGINE_MODULES)})", raw, key=name)
        if section is False:
            continue                     # `antivirus: false` turns a default engine off
        if section is None:
            # `antivirus:` with every option commented out means its defaults, never "off"
            section = LDict(DEFAULT_SECTIONS.get(name, {}))
            section.file, section.line = getattr(raw, "file", None), getattr(raw, "line", None)
        if not isinstance(section, dict):
            raise fail(f"engines.{name} must be a mapping (backend, on_error, timeout, ...)", raw, key=name)
        if section.get("enabled", True) is False:
            continue
        on_error = section.get("on_error", "tempfail")
        if on_error not in ON_ERROR:
            raise fail(f"engines.{name}.on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}",
                       section, key="on_error")
        timeout = section.get("timeout", DEFAULT_TIMEOUT)
        try:
            timeout = parse_duration(timeout)
        except (ValueError, TypeError) as exc:
            raise fail(f"engines.{name}.timeout: {exc}", section, key="timeout")
        if timeout <= 0:
            raise fail(f"engines.{name}.timeout must be positive", section, key="timeout")
        backend = section.get("backend", "builtin")
        if not isinstance(backend, str):
            raise fail(f"engines.{name}.backend must be a name", section, key="backend")
        options[name] = EngineOptions(name=name, backend=backend, on_error=on_error, timeout=timeout,
                                      section=section)
    return options


def engine_module(name: str):
    return importlib.import_module(ENGINE_MODULES[name])


def build_engines(settings) -> dict[str, Any]:
    """Every configured engine, built (no service is contacted here); ConfigError with file:line."""
    engines = {}
    for name, options in parse_engine_sections(settings.raw.get("engines")).items():
        module = engine_module(name)
        engine = module.build(options, settings)
        if not hasattr(engine, "options"):
            engine.options = options
        engines[name] = engine
    return engines


def validate_component(component: str, path: str) -> None:
    """Load a component's files from `path` in a throw-away engine; ConfigError if they would not load."""
    if component not in COMPONENT_MODULES:
        raise ConfigError(f"unknown pattern component {component!r} "
                          f"(expected one of: {', '.join(COMPONENT_MODULES)})")
    importlib.import_module(COMPONENT_MODULES[component]).validate_component(component, path)


def section_keys(options: EngineOptions, allowed) -> None:
    """Refuse keys an engine section does not know, with file and line."""
    section = options.section
    if not isinstance(section, LDict):
        section = section or {}
    known = set(COMMON_KEYS) | set(allowed)
    for key in section:
        if key not in known:
            raise fail(f"engines.{options.name}: unknown key {key!r} (expected one of: "
                       f"{', '.join(sorted(known))})", section, key=key)
