"""Scored spam rules of the built-in backend: loaded from the `spam` pattern component's YAML files.

A file holds `rules:`, a list of {name, type, regex, score, description}
(type header also names its `header`). Every regex is compiled here with
the `regex` module, so a rule that would not compile stops the load with
file and line; searches run later with a time limit (SpamRule.search).
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass

import regex

from ...errors import ConfigError
from ...settings import type_name
from ...textmatch import concurrent
from ...yamlconf import LDict, fail, load_yaml

RULE_TYPES = ("header", "body", "raw", "url")
RULE_KEYS = ("name", "type", "header", "regex", "score", "description", "case_sensitive")
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")


@dataclass(frozen=True)
class SpamRule:
    name: str
    type: str                  # one of RULE_TYPES
    pattern: object            # compiled regex.Pattern
    score: float
    description: str = ""
    header: str | None = None  # for type header: the field name, matched case-insensitively

    def search(self, text: str, timeout: float) -> bool | None:
        """True when the rule matches text, None when the search ran out of time (no score)."""
        try:
            return self.pattern.search(text, timeout=timeout, concurrent=concurrent(text)) is not None
        except TimeoutError:
            return None


def rule_files(directory: str) -> list[str]:
    """The *.yaml files of a rule directory, in name order (later files may not reuse a name)."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*.yaml")), key=os.path.basename)


def load_rules(directory: str) -> list[SpamRule]:
    """Every rule of every file in directory; ConfigError naming file and line when one is bad."""
    rules: list[SpamRule] = []
    seen: dict[str, str] = {}
    for path in rule_files(directory):
        for rule, where in parse_rule_file(load_yaml(path), path):
            if rule.name in seen:
                raise ConfigError(f"spam rule {rule.name!r} is defined twice (first in {seen[rule.name]})", *where)
            seen[rule.name] = where[0]
            rules.append(rule)
    return rules


def parse_rule_file(data, path: str) -> list[tuple[SpamRule, tuple]]:
    """The rules of one parsed file, each with its (file, line)."""
    if data is None:
        return []               # an empty file is a file with no rules
    if not isinstance(data, dict):
        raise fail(f"expected a mapping with rules: [...], got {type_name(data)}",
                   data if hasattr(data, "line") else _located(path))
    for key in data:
        if key != "rules":
            raise fail(f"unknown key {key!r}; a spam rule file holds rules: [...]", data, key)
    items = data.get("rules")
    if items is None:
        return []               # `rules:` with nothing under it: no rules, like an empty file
    if not isinstance(items, list):
        raise fail(f"rules: expected a list of rules, got {type_name(items)}", data, "rules")
    return [(parse_rule(item, items, index), (getattr(items, "file", path), _line(items, index)))
            for index, item in enumerate(items)]


def parse_rule(item, container, index) -> SpamRule:
    if not isinstance(item, dict):
        raise fail(f"expected a rule mapping {{name, type, regex, score}}, got {type_name(item)}", container, index)
    for key in item:
        if key not in RULE_KEYS:
            raise fail(f"unknown key {key!r} in spam rule; expected one of: {', '.join(RULE_KEYS)}", item, key)
    name = item.get("name")
    if not isinstance(name, str) or not _RULE_NAME.match(name):
        raise fail(f"name: expected a rule name of letters, digits, '_', '.', '-' (up to 64), got {name!r}",
                   item, "name" if "name" in item else None)
    what = f"spam rule {name}"
    kind = item.get("type")
    if kind not in RULE_TYPES:
        raise fail(f"{what}: type: expected one of {', '.join(RULE_TYPES)}, got {kind!r}",
                   item, "type" if "type" in item else None)
    header = item.get("header")
    if kind == "header":
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise fail(f"{what}: header: expected a header field name like Subject, got {header!r}",
                       item, "header" if "header" in item else None)
    elif header is not None:
        raise fail(f"{what}: header: only rules of type header name a header", item, "header")
    score = item.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise fail(f"{what}: score: expected a number (negative lowers the score), got {score!r}",
                   item, "score" if "score" in item else None)
    description = item.get("description", "")
    if not isinstance(description, str):
        raise fail(f"{what}: description: expected text, got {type_name(description)}", item, "description")
    case_sensitive = item.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise fail(f"{what}: case_sensitive: expected true or false", item, "case_sensitive")
    return SpamRule(name=name, type=kind, pattern=compile_rule_regex(item, what, case_sensitive),
                    score=float(score), description=description, header=header)


def compile_rule_regex(item, what: str, case_sensitive: bool):
    expression = item.get("regex")
    if not isinstance(expression, str) or not expression:
        raise fail(f"{what}: regex: expected a regular expression, got {expression!r}",
                   item, "regex" if "regex" in item else None)
    flags = regex.V0 if case_sensitive else regex.V0 | regex.IGNORECASE
    try:
        return regex.compile(expression, flags)
    except (regex.error, TypeError, ValueError, OverflowError) as exc:
        raise fail(f"{what}: bad regular expression {expression!r}: {exc}", item, "regex") from None


def _line(items, index):
    return items.item_line(index) if hasattr(items, "item_line") else None


def _located(path: str) -> LDict:
    where = LDict()
    where.file, where.line = path, 1
    return where
