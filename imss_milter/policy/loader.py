"""Rule files (SPEC §4) -> a compiled RuleSet, or a ConfigError naming file and line.

load_rules() reads every *.yaml of the rules directory in name order and
merges them before compiling anything, so a policy may use a group or
list defined in a later file:

- address_groups and lists: a later definition of a name replaces the
  earlier one everywhere.
- policies: a policy whose name was already defined in an EARLIER file
  replaces that policy IN PLACE (it keeps the evaluation position of the
  original). The replacement is whole, not merged; `enabled: false` turns
  a policy off and then needs nothing but its name, so
      policies: [{name: block-executables, enabled: false}]
  in 50-local.yaml disables a shipped policy. The same name twice in one
  file is an error.
- dlp: identifiers and templates are compiled and validated here
  (engines/dlp/config.py), after the DLP pattern files (`dlp_patterns`,
  the shipped seed when not given), so errors name file and line; RuleSet.dlp keeps
  the raw sections and carries the compiled form (.config) for the engine.
- the group `internal` exists automatically from the main config's
  internal_domains (those domains and their subdomains) unless a rule
  file defines it.
"""

from __future__ import annotations

import glob
import importlib
import importlib.resources
import os
import re
from typing import Iterable

from ..engines.dlp.config import DlpSections, compile_dlp
from ..errors import ConfigError
from ..mime.model import Limits
from ..settings import type_name
from ..textmatch import PatternError, TextMatcher
from ..yamlconf import LDict, fail, load_yaml, loads_yaml, read_text
from .actions import compile_actions
from .addresses import compile_selector, group_from_patterns, internal_group
from .conditions import CompileEnv, NamedList, compile_condition
from .ruleset import Policy, Route, RuleSet

_TOP_KEYS = ("address_groups", "lists", "policies", "dlp")
_POLICY_KEYS = ("name", "description", "enabled", "route", "when", "actions", "final")
_ROUTE_KEYS = ("from", "to", "except")
_LIST_KEYS = ("type", "case_sensitive", "items")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def shipped_rules_dir() -> str:
    """The rules/ directory installed with the package (00-defaults.yaml and friends)."""
    resources = importlib.resources.files("imss_milter.rules")
    try:
        return os.fspath(resources)
    except TypeError:
        # a namespace package (rules/ has no __init__.py) gives a MultiplexedPath: take its first directory
        return next(iter(importlib.import_module("imss_milter.rules").__path__))


def rule_files(rules_dir: str) -> list[str]:
    """*.yaml files of a directory in name order; the shipped rules when the directory does not exist."""
    if not os.path.isdir(rules_dir):
        rules_dir = shipped_rules_dir()
    return sorted(glob.glob(os.path.join(glob.escape(rules_dir), "*.yaml")), key=os.path.basename)


def read_rule_sources(rules_dir: str) -> list[tuple[str, str]]:
    """(path, text) of every rule file, read once: what is validated is exactly what is later loaded."""
    return [(path, read_text(path)) for path in rule_files(rules_dir)]


def rules_dir_warnings(rules_dir: str) -> list[str]:
    """Mistakes in the rules directory itself, which loading alone cannot report."""
    if not os.path.isdir(rules_dir):
        return [f"rules_dir {rules_dir} does not exist: using the shipped rules ({shipped_rules_dir()})"]
    warnings = []
    ignored = sorted(name for name in os.listdir(rules_dir)
                     if name.endswith((".yml", ".YAML", ".YML", ".yaml.disabled")) or name.endswith(".yaml~"))
    for name in ignored:
        warnings.append(f"{os.path.join(rules_dir, name)} is ignored: only *.yaml files are rule files")
    if not rule_files(rules_dir):
        warnings.append(f"rules_dir {rules_dir} has no *.yaml files: no policy applies")
    return warnings


def load_rules(rules_dir: str, internal_domains: Iterable[str] = (), limits: Limits = Limits(),
               engines: Iterable[str] | None = None, dlp_patterns: list | None = None) -> RuleSet:
    """Load and compile every rule file; `engines` names the configured engines, for warnings."""
    return compile_rules(rule_files(rules_dir), internal_domains, limits, engines, dlp_patterns)


def compile_rules(paths: list, internal_domains: Iterable[str] = (), limits: Limits = Limits(),
                  engines: Iterable[str] | None = None, dlp_patterns: list | None = None) -> RuleSet:
    """Compile the given files, in the given order (load_rules without the directory scan).

    Each item is a path, or a (path, text) pair from read_rule_sources(): errors name the path.
    `dlp_patterns` are the DLP pattern files' mappings (engines.dlp.load_dlp_patterns); None
    means the shipped seed set.
    """
    raw_groups: dict[str, tuple] = {}
    raw_lists: dict[str, tuple] = {}
    raw_policies: list[LDict] = []
    positions: dict[str, int] = {}
    dlp_sections = []
    for item in paths:
        if isinstance(item, tuple):
            path, text = item
            data = loads_yaml(text, path)
        else:
            path = item
            data = load_yaml(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping with {', '.join(_TOP_KEYS)} at the top, got {type_name(data)}",
                              path, getattr(data, "line", 1))
        for key in data:
            if key not in _TOP_KEYS:
                raise fail(f"unknown key {key!r} in rule file; expected one of: {', '.join(_TOP_KEYS)}", data, key)
        for name, value in _named_mapping(data, "address_groups").items():
            raw_groups[name] = (value, _table(data, "address_groups"), name)
        for name, value in _named_mapping(data, "lists").items():
            raw_lists[name] = (value, _table(data, "lists"), name)
        if data.get("dlp") is not None:
            if not isinstance(data["dlp"], dict):
                raise fail(f"dlp: expected a mapping, got {type_name(data['dlp'])}", data, "dlp")
            dlp_sections.append(data["dlp"])
        _merge_policies(data, path, raw_policies, positions)

    groups = {"internal": internal_group(internal_domains)}
    for name, (value, table, key) in raw_groups.items():
        groups[name] = group_from_patterns(name, value, table, key)
    lists = {name: _compile_list(name, value, table, key, limits) for name, (value, table, key) in raw_lists.items()}
    dlp_config = compile_dlp(dlp_sections, limits.regex_timeout, dlp_patterns)
    env = CompileEnv(groups=groups, lists=lists, dlp_templates=dlp_config.template_names,
                     regex_timeout=limits.regex_timeout)
    policies = []
    engines_used: dict[str, set] = {}
    warnings: list[str] = []
    for raw in raw_policies:
        env.engines_used, env.groups_used = {}, set()
        policy = _compile_policy(raw, env)
        policies.append(policy)
        if policy.enabled:
            for engine, conditions in env.engines_used.items():
                engines_used.setdefault(engine, set()).update(conditions)
                if engines is None or engine not in set(engines):
                    for condition in sorted(conditions):
                        warnings.append(f"policy {policy.name!r} uses {condition!r} but no {engine} engine "
                                        f"is configured; the condition never matches")
            if "internal" in env.groups_used and "internal" not in raw_groups and groups["internal"].empty:
                warnings.append(f"policy {policy.name!r} uses the group 'internal', which is empty: "
                                f"set internal_domains in the main config")
    files = [item[0] if isinstance(item, tuple) else item for item in paths]     # paths, never the texts
    return RuleSet(policies=policies, groups=groups, lists=lists, files=files, limits=limits,
                   dlp=DlpSections(dlp_sections, dlp_config), engines_used=engines_used, warnings=warnings)


def _table(data: LDict, key: str) -> LDict:
    return data[key]


def _named_mapping(data: LDict, key: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{key}: expected a mapping of names, got {type_name(value)}", data, key)
    for name in value:
        if not isinstance(name, str) or not _NAME.match(name) or name in ("any",):
            raise fail(f"{key}: expected a name of letters, digits, '_', '.', '-' (not 'any'), got {name!r}",
                       value, name)
    return value


def _merge_policies(data: LDict, path: str, raw_policies: list, positions: dict) -> None:
    """Append this file's policies; a name from an earlier file is replaced in place."""
    value = data.get("policies")
    if value is None:
        return
    if not isinstance(value, list):
        raise fail(f"policies: expected a list of policies, got {type_name(value)}", data, "policies")
    seen_here: dict[str, int] = {}
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise fail(f"expected a policy mapping with name, route, when, actions; got {type_name(raw)}", value, index)
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"policy name: expected letters, digits, '_', '.', '-', got {name!r}",
                       raw, "name" if "name" in raw else None)
        if name in seen_here:
            raise fail(f"policy {name!r} is defined twice in this file (first on line {seen_here[name]})", raw, "name")
        seen_here[name] = raw.key_line("name")
        if name in positions:
            raw_policies[positions[name]] = raw
        else:
            positions[name] = len(raw_policies)
            raw_policies.append(raw)


def _compile_list(name: str, value, table, key, limits: Limits) -> NamedList:
    if not isinstance(value, dict):
        raise fail(f"list {name!r}: expected a mapping with type and items, got {type_name(value)}", table, key)
    for option in value:
        if option not in _LIST_KEYS:
            raise fail(f"unknown key {option!r} in list {name!r}; expected one of: {', '.join(_LIST_KEYS)}",
                       value, option)
    kind = value.get("type", "keywords")
    if kind not in ("keywords", "expressions"):
        raise fail(f"list {name!r}: type: expected keywords or expressions, got {kind!r}", value, "type")
    case_sensitive = value.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise fail(f"list {name!r}: case_sensitive: expected true or false, got {type_name(case_sensitive)}",
                   value, "case_sensitive")
    items = value.get("items")
    if not isinstance(items, list) or not items:
        raise fail(f"list {name!r}: expected items: a non-empty list of strings", value,
                   "items" if "items" in value else None)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise fail(f"list {name!r}: expected a non-empty string, got {type_name(item)}", items, index)
    try:
        matcher = (TextMatcher(items, (), case_sensitive, limits.regex_timeout) if kind == "keywords"
                   else TextMatcher((), items, case_sensitive, limits.regex_timeout))
    except PatternError as exc:
        raise fail(f"list {name!r}: {exc}", items, exc.index) from None
    return NamedList(name, kind, case_sensitive, tuple(items), matcher)


def _compile_policy(raw: LDict, env: CompileEnv) -> Policy:
    name = raw["name"]
    for key in raw:
        if key not in _POLICY_KEYS:
            raise fail(f"unknown key {key!r} in policy {name!r}; expected one of: {', '.join(_POLICY_KEYS)}", raw, key)
    enabled = raw.get("enabled", True)
    final = raw.get("final", False)
    for key, value in (("enabled", enabled), ("final", final)):
        if not isinstance(value, bool):
            raise fail(f"policy {name!r}: {key}: expected true or false, got {type_name(value)}", raw, key)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail(f"policy {name!r}: description: expected a string, got {type_name(description)}",
                   raw, "description")
    # a disabled override needs only its name; whatever else it says is still checked
    if enabled and "actions" not in raw:
        raise fail(f"policy {name!r}: expected actions: [...] (or enabled: false)", raw, "name")
    route = _compile_route(raw.get("route"), env, raw, name)
    condition = compile_condition(raw["when"], env, raw, "when") if raw.get("when") is not None else None
    actions = compile_actions(raw["actions"], raw, "actions") if "actions" in raw else None
    return Policy(name=name, enabled=enabled, route=route, condition=condition, actions=actions, final=final,
                  file=raw.file, line=raw.key_line("name"), description=description)


def _compile_route(value, env: CompileEnv, raw: LDict, name: str) -> Route:
    if value is None:
        return Route()
    if not isinstance(value, dict):
        raise fail(f"policy {name!r}: route: expected a mapping with from, to, except; got {type_name(value)}",
                   raw, "route")
    for key in value:
        if key not in _ROUTE_KEYS:
            raise fail(f"unknown key {key!r} in route of policy {name!r}; expected one of: {', '.join(_ROUTE_KEYS)}",
                       value, key)
    sides = {}
    for key in ("from", "to"):
        if key in value:
            sides[key] = compile_selector(value[key], env.groups, f"route.{key}", value, key)
            env.groups_used.update(sides[key].group_names())
    exceptions = {}
    if value.get("except") is not None:
        section = value["except"]
        if not isinstance(section, dict):
            raise fail(f"route.except: expected a mapping with from and/or to, got {type_name(section)}", value, "except")
        for key in section:
            if key not in ("from", "to"):
                raise fail(f"unknown key {key!r} in route.except; expected one of: from, to", section, key)
            exceptions[key] = compile_selector(section[key], env.groups, f"route.except.{key}", section, key)
    route = Route(sender=sides.get("from", Route.sender), recipients=sides.get("to", Route.recipients),
                  except_sender=exceptions.get("from"), except_recipients=exceptions.get("to"))
    return route
