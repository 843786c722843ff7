"""The `dlp:` sections of rule files (SPEC §4b) -> a compiled DlpConfig, or a ConfigError with file and line.

Identifiers and templates are merged in this order, a later definition of
a name replacing the earlier one: the built-in ones (those needing code:
validators, maskers), the DLP pattern files (patterns.py: the installed
pattern set or the shipped seed), then the rule files in file order.
Every template is then checked against the merged identifiers, so a
template may use an identifier defined in a later file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...mime.model import TRUE_TYPE_CATEGORIES
from ...settings import parse_size, type_name
from ...yamlconf import fail
from .identifiers import (PREDEFINED_IDENTIFIERS, ExpressionIdentifier, FileIdentifier, Identifier,
                          KeywordIdentifier, mask_date, mask_email, mask_generic, mask_ipv4, mask_ipv6,
                          mask_middle, mask_phone, mask_ssn)
from .patterns import load_dlp_patterns
from .scanner import Scanner, compile_check
from .templates import AllOf, AnyOf, Clause, Node, NotOf
from .validators import ADMIN_VALIDATORS

_SECTION_KEYS = ("identifiers", "templates")
_IDENTIFIER_KEYS = {
    "expression": ("type", "pattern", "case_sensitive", "validator", "description"),
    "keywords": ("type", "items", "case_sensitive", "description"),
    "file": ("type", "true_type", "name", "size", "description"),
}
_CLAUSE_KEYS = ("identifier", "min_count", "distance")
_NODE_FORMS = ("identifier", "any", "all", "not")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*(\S.*?)\s*$")
_OPERATORS = {">": int.__gt__, ">=": int.__ge__, "<": int.__lt__, "<=": int.__le__,
              "=": int.__eq__, "==": int.__eq__, "!=": int.__ne__}

# Templates built from built-in identifiers only; pci-dss and health use keyword lists and
# come from the pattern files (patterns/dlp/00-identifiers.yaml).
PREDEFINED_TEMPLATES: dict[str, Node] = {
    "pii": AnyOf((Clause("us-ssn"), Clause("uk-nino"), Clause("date-of-birth"))),
    "secrets": AnyOf((Clause("private-key"), Clause("aws-access-key"), Clause("github-token"))),
}

# How a value accepted by a named validator is masked: the validator says what the value is,
# so it also says which characters are safe to show. Others: mask_generic.
_VALIDATOR_MASKS = {
    "card-number": lambda s: mask_middle(s, 4, 4), "iban": lambda s: mask_middle(s, 4, 4),
    "us-ssn": mask_ssn, "uk-nino": lambda s: mask_middle(s, 2, 1), "email": mask_email, "phone": mask_phone,
    "ipv4": mask_ipv4, "ipv6": mask_ipv6, "past-date": mask_date, "aws-access-key": lambda s: mask_middle(s, 4, 4),
}


@dataclass
class DlpConfig:
    """Identifiers and templates ready to scan with; immutable once built, shared by threads."""

    identifiers: dict[str, Identifier]
    templates: dict[str, Node]
    regex_timeout: float = 0.25
    scanner: Scanner = field(init=False, repr=False)

    def __post_init__(self):
        predefined = {name for name, ident in PREDEFINED_IDENTIFIERS.items() if self.identifiers.get(name) is ident}
        self.scanner = Scanner(self.identifiers, self.regex_timeout, frozenset(predefined))

    @property
    def template_names(self) -> set[str]:
        return set(self.templates)


class DlpSections(list):
    """RuleSet.dlp: the raw `dlp:` sections (a list, as before) that also carry their compiled form."""

    def __init__(self, sections, config: DlpConfig):
        super().__init__(sections)
        self.config = config


def compile_dlp(sections: list, regex_timeout: float = 0.25, patterns: list | None = None) -> DlpConfig:
    """Merge and validate the DLP pattern files' mappings, then the `dlp:` mappings of the rule files.

    `patterns` are load_dlp_patterns() results; None reads the shipped seed set.
    """
    if patterns is None:
        patterns = load_dlp_patterns(None)
    raw_identifiers: dict[str, tuple] = {}
    raw_templates: dict[str, tuple] = {}
    for section in [*patterns, *sections]:
        for key in section:
            if key not in _SECTION_KEYS:
                raise fail(f"unknown key {key!r} in dlp; expected one of: {', '.join(_SECTION_KEYS)}", section, key)
        for name, value in _names(section, "identifiers").items():
            raw_identifiers[name] = (value, section["identifiers"], name)
        for name, value in _names(section, "templates").items():
            raw_templates[name] = (value, section["templates"], name)
    identifiers: dict[str, Identifier] = dict(PREDEFINED_IDENTIFIERS)
    for name, (value, table, key) in raw_identifiers.items():
        identifiers[name] = compile_identifier(name, value, table, key)
    templates = dict(PREDEFINED_TEMPLATES)
    for name, (value, table, key) in raw_templates.items():
        templates[name] = compile_node(value, identifiers, f"template {name!r}", table, key)
    return DlpConfig(identifiers, templates, regex_timeout)


def _names(section, key: str) -> dict:
    value = section.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"dlp.{key}: expected a mapping of names, got {type_name(value)}", section, key)
    for name in value:
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"dlp.{key}: expected a name of letters, digits, '_', '.', '-', got {name!r}", value, name)
    return value


def compile_identifier(name: str, value, table, key) -> Identifier:
    what = f"dlp identifier {name!r}"
    if not isinstance(value, dict):
        raise fail(f"{what}: expected a mapping with type: expression | keywords | file, got {type_name(value)}",
                   table, key)
    kind = value.get("type")
    if kind not in _IDENTIFIER_KEYS:
        raise fail(f"{what}: type: expected expression, keywords or file, got {kind!r}", value,
                   "type" if "type" in value else None)
    for option in value:
        if option not in _IDENTIFIER_KEYS[kind]:
            raise fail(f"unknown key {option!r} in {what}; expected one of: {', '.join(_IDENTIFIER_KEYS[kind])}",
                       value, option)
    description = value.get("description", "")
    if not isinstance(description, str):
        raise fail(f"{what}: description: expected a string, got {type_name(description)}", value, "description")
    if kind == "expression":
        return _expression(name, value, what, description)
    if kind == "keywords":
        items = value.get("items")
        if not isinstance(items, list) or not items:
            raise fail(f"{what}: expected items: a non-empty list of keywords", value,
                       "items" if "items" in value else None)
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise fail(f"{what}: expected a non-empty keyword string, got {type_name(item)}", items, index)
        return KeywordIdentifier(name, tuple(items), _bool(value, "case_sensitive", False, what), description)
    return _file(name, value, what, description)


def _bool(value, key: str, default: bool, what: str) -> bool:
    found = value.get(key, default)
    if not isinstance(found, bool):
        raise fail(f"{what}: {key}: expected true or false, got {type_name(found)}", value, key)
    return found


def _expression(name: str, value, what: str, description: str) -> ExpressionIdentifier:
    pattern = value.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise fail(f"{what}: expected pattern: a regular expression string", value,
                   "pattern" if "pattern" in value else None)
    case_sensitive = _bool(value, "case_sensitive", False, what)
    problem = compile_check(pattern, case_sensitive)
    if problem:
        raise fail(f"{what}: {problem}", value, "pattern")
    validator = value.get("validator")
    if validator is not None and (not isinstance(validator, str) or validator not in ADMIN_VALIDATORS):
        raise fail(f"{what}: validator: expected one of {', '.join(sorted(ADMIN_VALIDATORS))}, got {validator!r}",
                   value, "validator")
    return ExpressionIdentifier(name, pattern, ADMIN_VALIDATORS.get(validator),
                                _VALIDATOR_MASKS.get(validator, mask_generic),
                                case_sensitive=case_sensitive, description=description)


def _string_list(value, key: str, what: str) -> list[str]:
    found = value[key]
    items = [found] if isinstance(found, str) else found
    if not isinstance(items, list) or not items:
        raise fail(f"{what}: {key}: expected a string or a non-empty list of strings, got {type_name(found)}",
                   value, key)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{what}: {key}: expected a non-empty string, got {type_name(item)}",
                       *((items, index) if items is found else (value, key)))
    return [item.strip() for item in items]


def _file(name: str, value, what: str, description: str) -> FileIdentifier:
    if not any(key in value for key in ("true_type", "name", "size")):
        raise fail(f"{what}: expected at least one of true_type, name, size", value, "type")
    categories, mime_globs, name_globs = [], [], []
    if "true_type" in value:
        for item in _string_list(value, "true_type", what):
            if "/" in item:
                mime_globs.append(item.lower())
            elif item.lower() in TRUE_TYPE_CATEGORIES:
                categories.append(item.lower())
            else:
                raise fail(f"{what}: true_type: expected a MIME type or one of: {', '.join(TRUE_TYPE_CATEGORIES)}, "
                           f"got {item!r}", value, "true_type")
    if "name" in value:
        name_globs = [glob.lower() for glob in _string_list(value, "name", what)]
    size, size_text = None, ""
    if "size" in value:
        size_text = str(value["size"])
        size = _size_comparison(value["size"], what, value)
    return FileIdentifier(name, tuple(categories), tuple(mime_globs), tuple(name_globs), size, size_text,
                          description)


def _size_comparison(raw, what: str, container):
    found = _COMPARISON.match(str(raw)) if not isinstance(raw, bool) else None
    try:
        if found is None:
            raise ValueError("empty")
        op, limit = found.group(1) or ">=", parse_size(found.group(2))
    except ValueError:
        raise fail(f"{what}: size: expected a comparison like '>1MB' or '<=10KB', got {raw!r}",
                   container, "size") from None
    compare = _OPERATORS[op]
    return lambda size: compare(size, limit)


def compile_node(value, identifiers: dict, what: str, container, key) -> Node:
    """One template node: {identifier, min_count, distance} or any:/all: [nodes] or not: node."""
    if not isinstance(value, dict) or not value:
        raise fail(f"{what}: expected a mapping with identifier, any, all or not; got {type_name(value)}",
                   container, key)
    forms = [form for form in _NODE_FORMS if form in value]
    if len(forms) != 1:
        raise fail(f"{what}: expected exactly one of identifier, any, all, not; got "
                   f"{', '.join(map(repr, value)) or 'nothing'}", container, key)
    form = forms[0]
    if form == "identifier":
        return _clause(value, identifiers, what)
    if len(value) != 1:
        extra = next(k for k in value if k != form)
        raise fail(f"unknown key {extra!r} beside {form}: in {what}", value, extra)
    if form == "not":
        return NotOf(compile_node(value["not"], identifiers, what, value, "not"))
    children = value[form]
    if not isinstance(children, list) or not children:
        raise fail(f"{what}: {form}: expected a non-empty list of template nodes, got {type_name(children)}",
                   value, form)
    compiled = tuple(compile_node(child, identifiers, what, children, index) for index, child in enumerate(children))
    return AllOf(compiled) if form == "all" else AnyOf(compiled)


def _clause(value, identifiers: dict, what: str) -> Clause:
    for option in value:
        if option not in _CLAUSE_KEYS:
            raise fail(f"unknown key {option!r} in {what}; expected one of: {', '.join(_CLAUSE_KEYS)}", value, option)
    name = value["identifier"]
    if not isinstance(name, str) or name not in identifiers:
        raise fail(f"{what}: unknown identifier {name!r}; expected one of: {', '.join(sorted(identifiers))}",
                   value, "identifier")
    min_count = value.get("min_count", 1)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise fail(f"{what}: min_count: expected a whole number of 1 or more, got {min_count!r}", value, "min_count")
    distance = value.get("distance")
    if distance is not None and (isinstance(distance, bool) or not isinstance(distance, int) or distance < 0):
        raise fail(f"{what}: distance: expected a number of characters (0 or more), got {distance!r}",
                   value, "distance")
    return Clause(name, min_count, distance)
