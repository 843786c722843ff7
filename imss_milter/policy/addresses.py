"""Address patterns, address groups and the address selectors of routes.

Pattern forms (all case-insensitive):
  *@example.com      glob on the whole address (*, ?, [...])
  *@*.example.com    any subdomain
  user@              that local part at any domain
  @example.com       exactly that domain
  example.com        the same as @example.com
A selector (route `from`/`to`, `except`, sender.address) is `any`, a group
name, `!group`, or a list of patterns and group names.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ..settings import type_name
from ..yamlconf import fail

_BARE_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def normalise_address(address: str) -> str:
    """Lower-case, without angle brackets or surrounding space."""
    return address.strip().strip("<>").strip().lower()


def pattern_to_glob(pattern: str) -> str:
    """The glob an address pattern stands for; ValueError when it is not one."""
    text = pattern.strip().lower()
    if not text or any(c.isspace() for c in text) or text.count("@") > 1:
        raise ValueError(f"expected an address pattern like '*@example.com', 'user@', '@example.com' "
                         f"or 'example.com', got {pattern!r}")
    if text.count("[") != text.count("]"):
        raise ValueError(f"unbalanced [ ] in address pattern {pattern!r}")
    if "@" not in text:
        if "." not in text and "*" not in text:
            raise ValueError(f"expected an address pattern, got {pattern!r} "
                             f"(a bare word is read as a group name in routes)")
        return "*@" + text
    local, domain = text.split("@")
    return (local or "*") + "@" + (domain or "*")


def compile_globs(globs: list[str]) -> re.Pattern | None:
    """One anchored regex for many globs (case-insensitive), or None when there are none."""
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g.lower())})" for g in globs), re.IGNORECASE | re.DOTALL)


class AddressGroup:
    """A named set of address patterns, matched with one compiled regex."""

    def __init__(self, name: str, patterns: list[str], globs: list[str]):
        self.name = name
        self.patterns = tuple(patterns)
        self._regex = compile_globs(globs)

    def matches(self, address: str) -> bool:
        return bool(address) and self._regex is not None and self._regex.match(address) is not None

    @property
    def empty(self) -> bool:
        return self._regex is None


def group_from_patterns(name: str, patterns: list, container, key) -> AddressGroup:
    """Build a group from a YAML list, errors located at the offending item."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        raise fail(f"address group {name!r}: expected a list of address patterns, got {type_name(patterns)}",
                   container, key)
    globs = []
    for index, item in enumerate(patterns):
        if not isinstance(item, str):
            raise fail(f"address group {name!r}: expected an address pattern string, got {type_name(item)}",
                       patterns, index)
        try:
            globs.append(pattern_to_glob(item))
        except ValueError as exc:
            raise fail(f"address group {name!r}: {exc}", patterns, index) from None
    return AddressGroup(name, list(patterns), globs)


def internal_group(domains) -> AddressGroup:
    """The built-in `internal` group: the internal domains and their subdomains."""
    globs = []
    for domain in domains:
        globs += [f"*@{domain}", f"*@*.{domain}"]
    return AddressGroup("internal", list(globs), globs)


@dataclass(frozen=True)
class Selector:
    """Which addresses a route side (or sender.address) accepts."""

    match_any: bool = False
    groups: tuple[AddressGroup, ...] = ()
    negated: bool = False           # "!group": every address NOT in the group (null sender included)
    own: AddressGroup | None = None  # the patterns written inline
    text: str = "any"               # as written, for messages

    def matches(self, address: str) -> bool:
        if self.match_any:
            return True
        inside = any(group.matches(address) for group in self.groups) or (
            self.own is not None and self.own.matches(address))
        return not inside if self.negated else inside

    def group_names(self) -> list[str]:
        return [group.name for group in self.groups]


ANY = Selector(match_any=True)


def compile_selector(value, groups: dict[str, AddressGroup], what: str, container, key) -> Selector:
    """A selector from `any`, `group`, `!group` or a list of patterns/group names."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "any":
            return ANY
        negated = text.startswith("!")
        name = text[1:].strip() if negated else text
        if name in groups:
            return Selector(groups=(groups[name],), negated=negated, text=text)
        if negated:
            raise fail(f"{what}: '!' needs a defined address group, {name!r} is not one "
                       f"(groups: {', '.join(sorted(groups)) or 'none'})", container, key)
        if _BARE_WORD.match(name) and "." not in name:
            raise fail(f"{what}: undefined address group {name!r} "
                       f"(groups: {', '.join(sorted(groups)) or 'none'})", container, key)
        value = [value]   # a single pattern; errors point at the selector itself
    if not isinstance(value, list) or not value:
        raise fail(f"{what}: expected any, a group name, '!group' or a list of address patterns, "
                   f"got {type_name(value)}", container, key)
    named, globs = [], []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"{what}: expected an address pattern or group name, got {type_name(item)}", value, index)
        here = (value, index) if getattr(value, "file", None) else (container, key)
        if item.strip() in groups:
            named.append(groups[item.strip()])
            continue
        if item.strip().lower() == "any":
            return ANY
        if item.strip().startswith("!"):
            raise fail(f"{what}: '!group' is allowed only as the whole selector, not inside a list", *here)
        if _BARE_WORD.match(item.strip()) and "." not in item:
            raise fail(f"{what}: undefined address group {item!r} (groups: {', '.join(sorted(groups)) or 'none'})",
                       *here)
        try:
            globs.append(pattern_to_glob(item))
        except ValueError as exc:
            raise fail(f"{what}: {exc}", *here) from None
    own = AddressGroup("(inline)", globs, globs) if globs else None
    return Selector(groups=tuple(named), own=own, text=", ".join(value))
