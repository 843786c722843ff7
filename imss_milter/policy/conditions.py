"""Policy conditions: small objects with a pure check(ctx) that returns evidence or None.

Evidence is a non-empty list of dicts ({"condition", "detail", ...}); None
means "does not match". CONDITIONS maps each condition name of the rule
format (SPEC §4) to the function that compiles its YAML value; the
boolean forms all:/any:/not: nest any of them.

Engine-owned conditions (virus, spam, dlp, url.reputation,
sender.reputation) ask an engine object from the `engines` mapping given
to RuleSet.evaluate(). The engine protocol is one method:

    engine.check(condition: str, argument, model: MessageModel,
                 envelope: Envelope, scratch: dict) -> list[dict]

`condition` is the condition name, so one object may serve several;
`argument` is the validated value:
    virus              tuple of categories; () means any detection
    spam               ("score", op, number) or ("level", "low"|"medium"|"high")
    dlp                tuple of template names
    url.reputation     tuple of categories; () means any listing
    sender.reputation  tuple of categories; () means any listing
`scratch` is a dict that lives for one message, so an engine scans once
however many policies ask. The result is the list of findings (each with
at least "detail"); non-empty means the condition matches. An exception
raised by an engine leaves evaluate() unchanged: the caller answers per
the engine's on_error. The mapping keys are ENGINE_OF_CONDITION's values.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..mime.model import (FLAG_ARCHIVE_LIMIT, FLAG_ENCRYPTED, FLAG_MALFORMED, FLAG_UNSCANNABLE,
                          TRUE_TYPE_CATEGORIES)
from ..settings import parse_size, type_name
from ..textmatch import TextMatcher, any_two_within, PatternError
from ..yamlconf import LDict, fail
from .addresses import AddressGroup, compile_globs, compile_selector, Selector
from .context import EvalContext

ENGINE_OF_CONDITION = {
    "virus": "antivirus",
    "spam": "spam",
    "dlp": "dlp",
    "url.reputation": "url",
    "sender.reputation": "sender_reputation",
}
PREDEFINED_DLP_TEMPLATES = ("pci-dss", "pii", "health", "secrets")
SPAM_LEVELS = ("low", "medium", "high")

_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)\s*(\S.*?)\s*$")
_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
              "=": operator.eq, "==": operator.eq, "!=": operator.ne}
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")   # printable ASCII without ':' (RFC 5322 ftext)
_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass
class CompileEnv:
    """What compiling a condition may refer to: groups, lists, DLP templates, limits, matcher cache."""

    groups: dict[str, AddressGroup]
    lists: dict[str, "NamedList"]
    dlp_templates: set[str]
    regex_timeout: float
    matchers: dict = field(default_factory=dict)   # (keywords, expressions, case) -> TextMatcher
    engines_used: dict = field(default_factory=dict)  # engine -> conditions using it (filled while compiling)
    groups_used: set = field(default_factory=set)

    def matcher(self, keywords=(), expressions=(), case_sensitive=False) -> TextMatcher:
        key = (tuple(keywords), tuple(expressions), case_sensitive)
        if key not in self.matchers:
            self.matchers[key] = TextMatcher(keywords, expressions, case_sensitive, self.regex_timeout)
        return self.matchers[key]


@dataclass
class NamedList:
    name: str
    kind: str                   # keywords | expressions
    case_sensitive: bool
    items: tuple[str, ...]
    matcher: TextMatcher


class Condition:
    """Base: name for evidence, check(ctx) -> list[dict] | None."""

    name = "condition"

    def check(self, ctx: EvalContext) -> list[dict] | None:   # pragma: no cover - abstract
        raise NotImplementedError

    def evidence(self, detail: str, **extra) -> list[dict]:
        return [{"condition": self.name, "detail": detail, **extra}]


# ---------------------------------------------------------------- boolean forms

class AllOf(Condition):
    name = "all"

    def __init__(self, children: list[Condition]):
        self.children = children

    def check(self, ctx):
        evidence = []
        for child in self.children:
            found = child.check(ctx)
            if found is None:
                return None
            evidence += found
        return evidence or self.evidence("all conditions hold")


class AnyOf(Condition):
    name = "any"

    def __init__(self, children: list[Condition]):
        self.children = children

    def check(self, ctx):
        for child in self.children:
            found = child.check(ctx)
            if found is not None:
                return found
        return None


class Not(Condition):
    name = "not"

    def __init__(self, child: Condition):
        self.child = child

    def check(self, ctx):
        if self.child.check(ctx) is None:
            return self.evidence(f"{self.child.name} does not hold")
        return None


class Always(Condition):
    name = "always"

    def check(self, ctx):
        return self.evidence("policy has no conditions")


# ---------------------------------------------------------------- comparisons

@dataclass(frozen=True)
class Comparison:
    op: str
    value: float

    def __call__(self, number) -> bool:
        return _OPERATORS[self.op](number, self.value)

    def __str__(self):
        return f"{self.op}{self.value:g}"


def compile_comparison(value, parse, what: str, container, key) -> Comparison:
    example = "'>10MB' or '<=1KB'" if parse is parse_size else "'>3' or '<=10'"
    if isinstance(value, str):
        match = _COMPARISON.match(value)
        if match:
            try:
                return Comparison(match.group(1), parse(match.group(2)))
            except ValueError:
                pass
    raise fail(f"{what}: expected a comparison like {example}, got {value!r}", container, key)


def _parse_count(text: str) -> int:
    number = int(text)
    if number < 0:
        raise ValueError(text)
    return number


class MessageSize(Condition):
    name = "message.size"

    def __init__(self, comparison: Comparison):
        self.comparison = comparison

    def check(self, ctx):
        size = ctx.model.raw_size
        if self.comparison(size):
            return self.evidence(f"message size {size} {self.comparison}", size=size)
        return None


class AttachmentSize(Condition):
    name = "attachment.size"

    def __init__(self, comparison: Comparison):
        self.comparison = comparison

    def check(self, ctx):
        for part in ctx.file_parts:
            if self.comparison(part.size):
                return self.evidence(f"{part.name or 'attachment'} size {part.size} {self.comparison}",
                                     path=list(part.path))
        return None


class AttachmentCount(Condition):
    name = "attachment.count"

    def __init__(self, comparison: Comparison):
        self.comparison = comparison

    def check(self, ctx):
        count = len(ctx.model.attachments)
        if self.comparison(count):
            return self.evidence(f"{count} attachments {self.comparison}", count=count)
        return None


# ---------------------------------------------------------------- attachments by name and type

def basename(name: str) -> str:
    """The file name Windows would see: no directory, no trailing dots or spaces."""
    # the text after the last slash or backslash: re.split(r"[\\/]", name)[-1] without a regex call
    return name[max(name.rfind("/"), name.rfind("\\")) + 1:].rstrip(". \t")


def extensions(name: str) -> list[str]:
    """Last extension first, then earlier plausible ones: 'a.pdf.exe' -> ['exe', 'pdf']."""
    pieces = basename(name).lower().split(".")[1:]
    if not pieces:
        return []
    found = [pieces[-1].strip()]
    found += [p.strip() for p in reversed(pieces[:-1]) if _EXTENSION.match(p.strip())]
    return [e for e in found if e]


class AttachmentName(Condition):
    name = "attachment.name"

    def __init__(self, globs: list[str]):
        self.globs = globs
        self._regex = compile_globs(globs)

    def check(self, ctx):
        match = self._regex.match
        for part in ctx.file_parts:
            for candidate in part.names:
                base = basename(candidate)
                # a name that is its own basename (no directory, no trailing dots) is matched once
                if match(base) or (base != candidate and match(candidate)):
                    return self.evidence(f"file name {candidate!r}", path=list(part.path))
        return None


class AttachmentExtension(Condition):
    name = "attachment.extension"

    def __init__(self, wanted: list[str]):
        self.wanted = frozenset(wanted)

    def check(self, ctx):
        for part in ctx.file_parts:
            for candidate in part.names:
                hit = self.wanted.intersection(extensions(candidate))
                if hit:
                    return self.evidence(f"file name {candidate!r} has extension {sorted(hit)[0]}",
                                         path=list(part.path))
        return None


class AttachmentTrueType(Condition):
    name = "attachment.true_type"

    def __init__(self, categories: list[str], mime_globs: list[str]):
        self.categories = frozenset(categories)
        self._mime = compile_globs(mime_globs)

    def check(self, ctx):
        for part in ctx.file_parts:
            if part.true_type in self.categories or (self._mime is not None and self._mime.match(part.mime)):
                return self.evidence(f"{part.name or 'part'} is {part.true_type} ({part.mime})",
                                     path=list(part.path))
        return None


class ContentType(Condition):
    name = "mime.content_type"

    def __init__(self, globs: list[str]):
        self._regex = compile_globs(globs)

    def check(self, ctx):
        for part in ctx.model.parts:
            if part.declared_type and self._regex.match(part.declared_type):
                return self.evidence(f"declared type {part.declared_type}", path=list(part.path))
        return None


class Flag(Condition):
    """encrypted / archive.limit_exceeded / archive.unscannable / malformed: a scanning exception of the message."""

    def __init__(self, name: str, wanted: bool):
        self.name = name
        self.wanted = wanted

    def present(self, ctx) -> bool:
        if self.name in ctx.model.flags:
            return True
        if self.name == FLAG_UNSCANNABLE:
            return any(part.unscannable for part in ctx.model.parts)
        return self.name == FLAG_ENCRYPTED and any(part.encrypted for part in ctx.model.parts)

    def check(self, ctx):
        if isinstance(self.wanted, tuple):
            return self.encrypted_of_types(ctx)
        if self.present(ctx) == self.wanted:
            notes = "; ".join(ctx.model.notes[:3])
            return self.evidence(f"{'is' if self.wanted else 'is not'} {self.name}" + (f": {notes}" if notes
                                                                                      and self.wanted else ""))
        return None


    def encrypted_of_types(self, ctx):
        """`encrypted: [archive, ...]`: an encrypted part whose own true type, or that of the archive or
        document holding it, is one of the categories. Judged per part, unlike `all:` over two
        conditions, which could pair an encrypted PDF with some other, plain zip."""
        encrypted = [part for part in ctx.model.parts if part.encrypted]
        if not encrypted:
            return None             # most mail: no index of the parts by path is needed
        by_path = {tuple(part.path): part for part in ctx.model.parts}
        found = []
        for part in encrypted:
            path = tuple(part.path)
            holders = [by_path.get(path[:depth]) for depth in range(1, len(path) + 1)]
            if any(holder is not None and holder.true_type in self.wanted for holder in holders):
                found.append({"condition": self.name, "detail": f"{'/'.join(path)} is encrypted",
                              "path": list(path)})
        return found or None


# ---------------------------------------------------------------- text conditions

class TextCondition(Condition):
    """Keywords/expressions/lists over subject, body, a header or attachment text."""

    def __init__(self, name: str, matchers: list[TextMatcher], min_count: int, distance: int | None,
                 header: str | None = None):
        self.name = name
        self.matchers = matchers
        self.min_count = min_count
        self.distance = distance
        self.header = header

    def targets(self, ctx) -> list:
        if self.name == "subject":
            return ["subject"]
        if self.name == "body":
            return ["body"]
        if self.name == "header":
            return [("header", self.header)]
        return [("part", index) for index in range(len(ctx.file_parts))]

    def check(self, ctx):
        total, evidence = 0, []
        for target in self.targets(ctx):
            hits = self._hits(ctx, target)
            if not hits:
                continue
            where = self._where(ctx, target)
            if self.distance is not None:
                pair = any_two_within(hits, self.distance)
                if pair is None:
                    continue
                evidence.append({"condition": self.name, "detail": f"{where}: {pair[0].text!r} and "
                                 f"{pair[1].text!r} within {self.distance} characters", **self._path(ctx, target)})
            else:
                evidence.append({"condition": self.name, "detail": f"{where}: matched {hits[0].text!r}"
                                 + (f" and {len(hits) - 1} more" if len(hits) > 1 else ""),
                                 **self._path(ctx, target)})
            total += len(hits)
            if total >= self.min_count:
                return evidence
        return None

    def _hits(self, ctx, target) -> list:
        hits = []
        offset = 0
        for matcher in self.matchers:
            key = (id(matcher), target)
            result = ctx.search_cache.get(key)
            if result is None:
                text, folded = ctx.text(target)
                result = matcher.search(text, folded)
                ctx.search_cache[key] = result
            if result.timed_out:
                ctx.note(self.name, f"expression search timed out after {matcher.timeout:g}s "
                                    f"in {self._where(ctx, target)}; treated as no match")
            if offset:
                hits += [type(h)(h.item + offset, h.start, h.end, h.text) for h in result.hits]
            else:
                hits += result.hits
            offset += matcher.item_count
        return hits

    def _where(self, ctx, target) -> str:
        if isinstance(target, tuple) and target[0] == "part":
            part = ctx.file_parts[target[1]]
            return f"attachment {part.name or '/'.join(part.path) or 'unnamed'}"
        if isinstance(target, tuple):
            return f"header {target[1]}"
        return target

    def _path(self, ctx, target) -> dict:
        if isinstance(target, tuple) and target[0] == "part":
            return {"path": list(ctx.file_parts[target[1]].path)}
        return {}


# ---------------------------------------------------------------- envelope facts

class SenderIP(Condition):
    name = "sender.ip"

    def __init__(self, networks: list):
        self.networks = networks

    def check(self, ctx):
        text = ctx.envelope.client_ip
        if not text:
            return None
        try:
            address = ipaddress.ip_address(text.strip().strip("[]").removeprefix("IPv6:"))
        except ValueError:
            return None
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        for network in self.networks:
            if address.version == network.version and address in network:
                return self.evidence(f"client {address} in {network}")
        return None


class SenderAddress(Condition):
    name = "sender.address"

    def __init__(self, selector: Selector):
        self.selector = selector

    def check(self, ctx):
        if self.selector.matches(ctx.sender):
            return self.evidence(f"sender {ctx.sender or '<>'} matches {self.selector.text}")
        return None


# ---------------------------------------------------------------- engine conditions

def engines_of(condition: Condition | None) -> set[str]:
    """The engines a condition tree asks (ENGINE_OF_CONDITION values)."""
    if condition is None:
        return set()
    if isinstance(condition, EngineCondition):
        return {condition.engine}
    found: set[str] = set()
    for child in getattr(condition, "children", ()):
        found |= engines_of(child)
    if isinstance(condition, Not):
        found |= engines_of(condition.child)
    return found


def engine_conditions(condition: Condition | None) -> list["EngineCondition"]:
    """Every engine condition of a condition tree, in order."""
    if condition is None:
        return []
    if isinstance(condition, EngineCondition):
        return [condition]
    found = []
    for child in getattr(condition, "children", ()):
        found += engine_conditions(child)
    if isinstance(condition, Not):
        found += engine_conditions(condition.child)
    return found


def engine_condition_warnings(policies, engines) -> list[str]:
    """What the engines say about the arguments enabled policies give them (an engine's optional
    condition_warnings(condition, argument), e.g. a url.reputation category no zone produces).
    Rules compile without the engines, so this runs once both exist (load and reload)."""
    warnings: list[str] = []
    for policy in policies:
        if not policy.enabled:
            continue
        for condition in engine_conditions(policy.condition):
            warn = getattr(engines.get(condition.engine), "condition_warnings", None)
            if warn is not None:
                where = f"{policy.file}:{policy.line}: " if policy.file and policy.line else ""
                warnings += [f"{where}policy {policy.name!r}: {text}"
                             for text in warn(condition.name, condition.argument)]
    return list(dict.fromkeys(warnings))


class EngineCondition(Condition):
    def __init__(self, name: str, argument):
        self.name = name
        self.engine = ENGINE_OF_CONDITION[name]
        self.argument = argument

    def check(self, ctx):
        engine = ctx.engines.get(self.engine)
        if engine is None:
            ctx.note(self.name, "engine not configured")
            return None
        key = (self.name, self.argument)
        if key not in ctx.engine_cache:
            ctx.engine_cache[key] = list(engine.check(self.name, self.argument, ctx.model, ctx.envelope,
                                                      ctx.engine_scratch) or [])
        findings = ctx.engine_cache[key]
        if not findings:
            return None
        return [{"condition": self.name, **finding} if "detail" in finding
                else {"condition": self.name, "detail": str(finding), **finding} for finding in findings]


# ---------------------------------------------------------------- compilers (the table is data)

def _string_list(value, what, container, key, allow_empty=False) -> tuple[list[str], Any]:
    """A string or list of strings; returns (items, the container to locate items in)."""
    if isinstance(value, str):
        return [value], None
    if not isinstance(value, list) or (not value and not allow_empty):
        raise fail(f"{what}: expected a list of strings, got {type_name(value)}", container, key)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise fail(f"{what}: expected a non-empty string, got {type_name(item)}", value, index)
    return list(value), value


def _at(items_container, index, container, key):
    return (items_container, index) if items_container is not None else (container, key)


def _compile_size(cls, parse):
    def compile_(name, value, env, container, key):
        return cls(compile_comparison(value, parse, name, container, key))
    return compile_


def _compile_name(name, value, env, container, key):
    globs, items = _string_list(value, name, container, key)
    for index, glob in enumerate(globs):
        if glob.count("[") != glob.count("]"):
            raise fail(f"{name}: unbalanced [ ] in glob {glob!r}", *_at(items, index, container, key))
    return AttachmentName([g.lower() for g in globs])


def _compile_extension(name, value, env, container, key):
    found, items = _string_list(value, name, container, key)
    wanted = []
    for index, ext in enumerate(found):
        clean = ext.strip().lower().lstrip("*").lstrip(".")
        if not clean or not re.match(r"^[a-z0-9_~$-]{1,32}$", clean):
            raise fail(f"{name}: expected an extension like exe or .exe, got {ext!r}",
                       *_at(items, index, container, key))
        wanted.append(clean)
    return AttachmentExtension(wanted)


def _compile_true_type(name, value, env, container, key):
    found, items = _string_list(value, name, container, key)
    categories, mimes = [], []
    for index, item in enumerate(found):
        item = item.strip().lower()
        if "/" in item:
            mimes.append(item)
        elif item in TRUE_TYPE_CATEGORIES:
            categories.append(item)
        else:
            raise fail(f"{name}: unknown true type {item!r}; expected a MIME type like "
                       f"application/x-dosexec or one of: {', '.join(TRUE_TYPE_CATEGORIES)}",
                       *_at(items, index, container, key))
    return AttachmentTrueType(categories, mimes)


def _compile_content_type(name, value, env, container, key):
    globs, items = _string_list(value, name, container, key)
    for index, glob in enumerate(globs):
        if "/" not in glob and glob != "*":
            raise fail(f"{name}: expected a content type glob like 'application/*', got {glob!r}",
                       *_at(items, index, container, key))
    return ContentType([g.strip().lower() for g in globs])


def _compile_flag(name, value, env, container, key):
    if name == FLAG_ENCRYPTED and isinstance(value, list):
        categories = tuple(str(item).lower() for item in value)
        unknown = [category for category in categories if category not in TRUE_TYPE_CATEGORIES]
        if not categories or unknown:
            raise fail(f"encrypted: expected true, false or a list of true-type categories "
                       f"({', '.join(TRUE_TYPE_CATEGORIES)})" + (f", not {unknown[0]!r}" if unknown else ""),
                       container, key)
        return Flag(name, categories)
    if not isinstance(value, bool):
        extra = " or a list of true-type categories" if name == FLAG_ENCRYPTED else ""
        raise fail(f"{name}: expected true or false{extra}, got {type_name(value)}", container, key)
    return Flag(name, value)


_TEXT_KEYS = ("keywords", "expressions", "list", "min_count", "distance", "case_sensitive")


def _compile_text(name, value, env, container, key):
    if isinstance(value, (str, list)):   # shorthand: a list of keywords
        spec = LDict(keywords=value)
        spec.file, spec.line = getattr(container, "file", None), getattr(container, "key_line", lambda k: None)(key)
        spec.key_lines["keywords"] = spec.line
        value = spec
    if not isinstance(value, dict):
        raise fail(f"{name}: expected {{keywords: [...]}}, {{expressions: [...]}} or {{list: NAME}}, "
                   f"got {type_name(value)}", container, key)
    allowed = _TEXT_KEYS + (("name", "matches") if name == "header" else ())
    for spec_key in value:
        if spec_key not in allowed:
            raise fail(f"unknown key {spec_key!r} in condition {name}; expected one of: {', '.join(allowed)}",
                       value, spec_key)
    header = None
    if name == "header":
        header = value.get("name")
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise fail(f"header: expected name: a header field name like X-Mailer, got {header!r}",
                       value, "name" if "name" in value else None)
    case_sensitive = value.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise fail(f"{name}.case_sensitive: expected true or false, got {type_name(case_sensitive)}",
                   value, "case_sensitive")
    keywords, expressions, matchers = [], [], []
    if "keywords" in value:
        keywords, _ = _string_list(value["keywords"], f"{name}.keywords", value, "keywords")
    for spec_key in ("expressions", "matches"):
        if spec_key in value:
            items, items_container = _string_list(value[spec_key], f"{name}.{spec_key}", value, spec_key)
            _check_expressions(items, f"{name}.{spec_key}", items_container, value, spec_key, env)
            expressions += items
    if keywords or expressions:
        matchers.append(env.matcher(keywords, expressions, case_sensitive))
    if "list" in value:
        names, items = _string_list(value["list"], f"{name}.list", value, "list")
        for index, list_name in enumerate(names):
            if list_name not in env.lists:
                raise fail(f"{name}.list: undefined list {list_name!r} (lists: {', '.join(sorted(env.lists)) or 'none'})",
                           *_at(items, index, value, "list"))
            matchers.append(env.lists[list_name].matcher)
    if not matchers:
        raise fail(f"{name}: expected at least one of keywords, expressions{', matches' if header else ''} or list",
                   container, key)
    min_count = value.get("min_count", 1)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise fail(f"{name}.min_count: expected a whole number of at least 1, got {min_count!r}", value, "min_count")
    distance = value.get("distance")
    if distance is not None and (isinstance(distance, bool) or not isinstance(distance, int) or distance < 0):
        raise fail(f"{name}.distance: expected a number of characters (0 or more), got {distance!r}",
                   value, "distance")
    return TextCondition(name, matchers, min_count, distance, header)


def _check_expressions(items, what, items_container, container, key, env):
    try:
        TextMatcher((), items, False, env.regex_timeout)
    except PatternError as exc:
        raise fail(f"{what}: {exc}", *_at(items_container, exc.index, container, key)) from None


def _compile_sender_ip(name, value, env, container, key):
    found, items = _string_list(value, name, container, key)
    networks = []
    for index, text in enumerate(found):
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise fail(f"{name}: expected an IP address or CIDR like 192.0.2.0/24 or 2001:db8::/32, got {text!r}",
                       *_at(items, index, container, key)) from None
    return SenderIP(networks)


def _compile_sender_address(name, value, env, container, key):
    selector = compile_selector(value, env.groups, name, container, key)
    env.groups_used.update(selector.group_names())
    return SenderAddress(selector)


def _categories(name, value, container, key) -> tuple:
    if value is True:
        return ()
    if not isinstance(value, (str, list)) or not value:
        # [] would read as "no category", which matches nothing; true is how to say "any"
        shown = "an empty list" if isinstance(value, list) else "false" if value is False else type_name(value)
        raise fail(f"{name}: expected true or a non-empty list of categories, got {shown}", container, key)
    found, _ = _string_list(value, name, container, key)
    return tuple(sorted({item.strip().lower() for item in found}))


def _compile_engine(name, value, env, container, key):
    if name == "spam":
        argument = _spam_argument(value, container, key)
    elif name == "dlp":
        templates, items = _string_list(value, name, container, key)
        for index, template in enumerate(templates):
            if template not in env.dlp_templates:
                raise fail(f"dlp: unknown template {template!r}; expected one of: "
                           f"{', '.join(sorted(env.dlp_templates))}", *_at(items, index, container, key))
        argument = tuple(templates)
    else:
        argument = _categories(name, value, container, key)
        if name == "virus":
            # antivirus categories are a fixed set: a typo would silently never match
            from ..engines.antivirus import CATEGORIES
            unknown = [category for category in argument if category not in CATEGORIES]
            if unknown:
                raise fail(f"virus: unknown category {unknown[0]!r}; expected true or some of: "
                           f"{', '.join(CATEGORIES)}", container, key)
    env.engines_used.setdefault(ENGINE_OF_CONDITION[name], set()).add(name)
    return EngineCondition(name, argument)


def _spam_argument(value, container, key):
    if isinstance(value, dict) and len(value) == 1:
        if "score" in value:
            comparison = compile_comparison(str(value["score"]), float, "spam.score", value, "score")
            return ("score", comparison.op, comparison.value)
        if "level" in value:
            if value["level"] not in SPAM_LEVELS:
                raise fail(f"spam.level: expected one of {', '.join(SPAM_LEVELS)}, got {value['level']!r}",
                           value, "level")
            return ("level", value["level"])
    if value is True:
        return ("level", "medium")
    raise fail("spam: expected {score: '>=5'}, {level: low|medium|high} or true", container, key)


Compiler = Callable[[str, Any, CompileEnv, Any, Any], Condition]

CONDITIONS: dict[str, Compiler] = {
    "message.size": _compile_size(MessageSize, parse_size),
    "attachment.name": _compile_name,
    "attachment.extension": _compile_extension,
    "attachment.true_type": _compile_true_type,
    "attachment.size": _compile_size(AttachmentSize, parse_size),
    "attachment.count": _compile_size(AttachmentCount, _parse_count),
    "mime.content_type": _compile_content_type,
    "header": _compile_text,
    "subject": _compile_text,
    "body": _compile_text,
    "attachment.content": _compile_text,
    FLAG_ENCRYPTED: _compile_flag,
    FLAG_ARCHIVE_LIMIT: _compile_flag,
    FLAG_UNSCANNABLE: _compile_flag,
    FLAG_MALFORMED: _compile_flag,
    "sender.ip": _compile_sender_ip,
    "sender.address": _compile_sender_address,
    **{name: _compile_engine for name in ENGINE_OF_CONDITION},
}
_BOOLEAN = ("all", "any", "not")


def compile_condition(node, env: CompileEnv, container, key) -> Condition:
    """A condition tree from its YAML: one mapping of condition names (several keys mean all of them)."""
    if not isinstance(node, dict) or not node:
        raise fail(f"expected a condition mapping like {{attachment.name: ['*.exe']}} or all:/any:/not:, "
                   f"got {type_name(node)}", container, key)
    parts = []
    for name, value in node.items():
        if name in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise fail(f"{name}: expected a non-empty list of conditions, got {type_name(value)}", node, name)
            children = [compile_condition(child, env, value, index) for index, child in enumerate(value)]
            parts.append(AllOf(children) if name == "all" else AnyOf(children))
        elif name == "not":
            parts.append(Not(compile_condition(value, env, node, name)))
        elif name in CONDITIONS:
            parts.append(CONDITIONS[name](name, value, env, node, name))
        else:
            known = ", ".join(sorted(CONDITIONS) + list(_BOOLEAN))
            raise fail(f"unknown condition {name!r}; expected one of: {known}", node, name)
    return parts[0] if len(parts) == 1 else AllOf(parts)


def matched_paths(evidence: list[dict]) -> tuple[str, ...]:
    """The attachment paths named in evidence, for strip_attachments."""
    seen = []
    for item in evidence:
        path = item.get("path")
        if path:
            joined = "/".join(path)
            if joined not in seen:
                seen.append(joined)
    return tuple(seen)


__all__ = ["CONDITIONS", "ENGINE_OF_CONDITION", "CompileEnv", "Condition", "NamedList", "compile_condition",
           "engine_condition_warnings", "engine_conditions",
           "extensions", "basename", "matched_paths"]
