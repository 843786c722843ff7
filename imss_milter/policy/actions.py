"""Policy actions: validated at load into one terminal action plus a list of modifications.

An action item is a bare name (`deliver`, `delete`, `strip_attachments`,
`tempfail`, `reject`, `quarantine`) or a one-key mapping with options
(SPEC §4). Terminal actions decide the message; every other action is a
Modification that applies only if the message is delivered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..settings import type_name
from ..yamlconf import fail
from .addresses import normalise_address
from .types import TERMINAL_ACTIONS, Modification

REJECT_DEFAULT = ("550", "5.7.1", "Message rejected by policy")
TEMPFAIL_DEFAULT = ("451", "4.7.1", "Message deferred by policy, try again later")
NOTIFY_PEOPLE = ("admin", "sender", "recipients")

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")     # RFC 5322 ftext: printable ASCII except ':'
_AREA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_XCODE = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_TEMPLATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Terminal:
    action: str                                  # one of TERMINAL_ACTIONS
    reply: tuple[str, str, str] | None = None    # reject/tempfail
    area: str | None = None                      # quarantine


@dataclass(frozen=True)
class CompiledActions:
    terminal: Terminal | None
    modifications: tuple[Modification, ...]
    strips_attachments: bool = False


def _no_newlines(text: str, what: str, container, key) -> str:
    if not isinstance(text, str):
        raise fail(f"{what}: expected a string, got {type_name(text)}", container, key)
    if "\r" in text or "\n" in text or "\0" in text:
        raise fail(f"{what}: must be one line (no CR, LF or NUL)", container, key)
    return text


def _options(value, allowed, what, container, key) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{what}: expected a mapping with {', '.join(allowed)}, got {type_name(value)}", container, key)
    for option in value:
        if option not in allowed:
            raise fail(f"unknown key {option!r} in {what}; expected one of: {', '.join(allowed)}", value, option)
    return value


def _reply(name, value, default, container, key) -> tuple[str, str, str]:
    options = _options(value, ("code", "xcode", "text"), name, container, key)
    first = default[0][0]
    code = str(options.get("code", default[0]))
    if not re.match(rf"^{first}\d\d$", code):
        raise fail(f"{name}.code: expected an SMTP code {first}xx, got {options.get('code')!r}",
                   options, "code")
    xcode = str(options.get("xcode", default[1] if code == default[0] else f"{first}.7.1"))
    match = _XCODE.match(xcode)
    if not match or match.group(1) != first:
        raise fail(f"{name}.xcode: expected an enhanced status code like {default[1]}, got {options.get('xcode')!r}",
                   options, "xcode")
    text = _no_newlines(options.get("text", default[2]), f"{name}.text", options, "text")
    return code, xcode, text


def _area(name, value, container, key) -> str:
    if isinstance(value, str) or value is None:
        area = value or "default"
        where = (container, key)
    else:
        options = _options(value, ("area",), name, container, key)
        area = options.get("area", "default")
        where = (options, "area")
    if not isinstance(area, str) or not _AREA_NAME.match(area):
        raise fail(f"{name}.area: expected an area name of letters, digits, '_', '.', '-', got {area!r}", *where)
    return area


def _addresses(name, value, container, key) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise fail(f"{name}: expected an address or a list of addresses, got {type_name(value)}", container, key)
    found = []
    for index, item in enumerate(items):
        here = (items, index) if items is value else (container, key)
        if not isinstance(item, str) or not _ADDRESS.match(normalise_address(item)):
            raise fail(f"{name}: expected an email address like user@example.com, got {item!r}", *here)
        found.append(normalise_address(item))
    return tuple(found)


def _notify(value, container, key) -> Modification:
    options = _options(value, ("to", "template"), "notify", container, key)
    if "to" not in options:
        raise fail("notify: expected to: [admin|sender|recipients|address...]", container, key)
    targets = options["to"] if isinstance(options["to"], list) else [options["to"]]
    people = []
    for index, item in enumerate(targets):
        here = (targets, index) if targets is options["to"] else (options, "to")
        if item in NOTIFY_PEOPLE:
            people.append(item)
        elif isinstance(item, str) and _ADDRESS.match(normalise_address(item)):
            people.append(normalise_address(item))
        else:
            raise fail(f"notify.to: expected admin, sender, recipients or an email address, got {item!r}", *here)
    template = options.get("template", "default")
    if not isinstance(template, str) or not _TEMPLATE.match(template):
        raise fail(f"notify.template: expected a template name, got {template!r}", options, "template")
    return Modification("notify", (tuple(people), template))


def _single(name, value, what, container, key):
    if value not in (None, {}, True):
        raise fail(f"{what}: takes no options, got {type_name(value)}", container, key)


def compile_action(item, container, index) -> tuple[Terminal | None, Modification | None]:
    """One action item -> (terminal, None) or (None, modification)."""
    if isinstance(item, str):
        name, value, where = item, None, (container, index)
    elif isinstance(item, dict) and len(item) == 1:
        name, value = next(iter(item.items()))
        where = (item, name)
    else:
        raise fail(f"expected an action name or a one-key mapping like {{quarantine: {{area: default}}}}, "
                   f"got {type_name(item)}", container, index)
    if name == "deliver" or name == "delete":
        _single(name, value, name, *where)
        return Terminal(name), None
    if name == "reject":
        return Terminal("reject", _reply("reject", value, REJECT_DEFAULT, *where)), None
    if name == "tempfail":
        return Terminal("tempfail", _reply("tempfail", value, TEMPFAIL_DEFAULT, *where)), None
    if name == "quarantine":
        return Terminal("quarantine", area=_area("quarantine", value, *where)), None
    if name == "archive":
        return None, Modification("archive", (_area("archive", value, *where),))
    if name == "tag_subject":
        text = _no_newlines(value, "tag_subject", *where)
        if not text:
            raise fail("tag_subject: expected a non-empty prefix like '[SPAM] '", *where)
        return None, Modification("tag_subject", (text,))
    if name == "add_header":
        options = _options(value, ("name", "value"), "add_header", *where)
        header = options.get("name")
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise fail(f"add_header.name: expected a header field name like X-IMSS-Rule (printable ASCII, "
                       f"no ':' or spaces), got {header!r}", options, "name" if "name" in options else None)
        if "value" not in options:
            raise fail("add_header: expected value: TEXT", *where)
        header_value = options["value"]
        if isinstance(header_value, (int, float)) and not isinstance(header_value, bool):
            header_value = str(header_value)
        return None, Modification("add_header", (header, _no_newlines(header_value, "add_header.value",
                                                                       options, "value")))
    if name == "insert_stamp":
        options = _options(value, ("text",), "insert_stamp", *where) if not isinstance(value, str) else {"text": value}
        text = options.get("text")
        if not isinstance(text, str) or not text.strip():
            raise fail("insert_stamp: expected text: STAMP", *where)
        return None, Modification("insert_stamp", (text,))
    if name == "strip_attachments":
        _single(name, value, name, *where)
        return None, Modification("strip_attachments", ())
    if name in ("bcc", "reroute"):
        return None, Modification(name, _addresses(name, value, *where))
    if name == "notify":
        return None, _notify(value, *where)
    known = ", ".join(TERMINAL_ACTIONS + ("archive", "tag_subject", "add_header", "insert_stamp",
                                          "strip_attachments", "bcc", "reroute", "notify"))
    raise fail(f"unknown action {name!r}; expected one of: {known}", *where)


def compile_actions(value, container, key) -> CompiledActions:
    """The actions list of a policy; at most one terminal action."""
    if not isinstance(value, list) or not value:
        raise fail(f"actions: expected a non-empty list of actions, got {type_name(value)}", container, key)
    terminal, terminal_index, modifications = None, None, []
    for index, item in enumerate(value):
        found, modification = compile_action(item, value, index)
        if found is not None:
            if terminal is not None:
                raise fail(f"only one terminal action per policy (deliver, reject, tempfail, delete, quarantine); "
                           f"{terminal.action} is already on line {value.item_line(terminal_index)}", value, index)
            terminal, terminal_index = found, index
        if modification is not None:
            modifications.append(modification)
    return CompiledActions(terminal, tuple(modifications),
                           any(m.kind == "strip_attachments" for m in modifications))
