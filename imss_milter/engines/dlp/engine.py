"""The DLP engine behind the `dlp` condition: scan a message once, evaluate templates, report masked incidents.

Runtime registers one DlpEngine; per message it is bound to the DLP
configuration of the rule set judging that message (for_rules), so a
reload never mixes templates of two rule sets. The scan of a message is
kept in the per-message scratch dict: ten policies asking ten templates
cost one extraction and one scan.

Findings carry the template, the identifiers with their counts, where they
were found (subject, body or the attachment's path) and MASKED values
only; full values never leave this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .config import DlpConfig, compile_dlp
from .extract import Budget, extract_document
from .identifiers import FileIdentifier, Match, UnreadableIdentifier
from .scanner import TextScan
from .templates import evaluate

SAMPLES_PER_IDENTIFIER = 5      # masked values shown per identifier and place


@dataclass
class TextSource:
    """One searchable text of the message: where it came from and what the scan found in it."""

    where: str                      # "subject", "body", "attachment NAME"
    path: list[str] | None          # the part's path for attachments
    scan: TextScan = field(default_factory=TextScan)


@dataclass
class MessageScan:
    sources: list[TextSource]
    found: dict                     # identifier -> [(source index, Match)]
    unreadable: list[dict]          # {"where", "path", "kind", "problem"}
    timed_out: bool = False


_PREDEFINED: DlpConfig | None = None


def predefined_config() -> DlpConfig:
    """The built-in identifiers and templates and the shipped seed pattern files (built once)."""
    global _PREDEFINED
    if _PREDEFINED is None:
        _PREDEFINED = compile_dlp([])
    return _PREDEFINED


def config_of(rules) -> DlpConfig:
    """The compiled DLP configuration a RuleSet carries (loader), compiling its raw sections otherwise."""
    sections = getattr(rules, "dlp", None)
    # an empty DlpSections is still compiled (over the pattern files): test the config, not the list
    config = getattr(sections, "config", None)
    if config is not None:
        return config
    sections = sections or []
    return compile_dlp(sections, rules.limits.regex_timeout) if sections else predefined_config()


class DlpEngine:
    """engine.check("dlp", template_names, model, envelope, scratch) -> findings (SPEC §4b)."""

    def __init__(self, config: DlpConfig | None = None, budget: Budget | None = None):
        self.config = config
        self.budget = budget or Budget()

    def for_rules(self, rules) -> "DlpEngine":
        """This engine reading the templates of `rules` (what Runtime passes to RuleSet.evaluate)."""
        return DlpEngine(config_of(rules), self.budget)

    def check(self, condition: str, argument, model, envelope, scratch: dict) -> list[dict]:
        config = self.config or predefined_config()
        key = ("dlp", id(config))
        if key not in scratch:
            scratch[key] = scan_message(model, config, self.budget)
        message_scan = scratch[key]
        findings = []
        for template in argument:
            node = config.templates.get(template)
            if node is None:
                continue    # validated at load; a template missing here belongs to another rule set
            support = evaluate(node, message_scan.found)
            if support is not None:
                findings += incident(template, support, message_scan)
        return findings


def scan_message(model, config: DlpConfig, budget: Budget) -> MessageScan:
    """Extract every text of the message within the budget and scan each once for all identifiers."""
    deadline = time.monotonic() + budget.max_seconds
    max_chars = min(budget.max_chars, getattr(getattr(model, "limits", None), "max_text_chars", budget.max_chars))
    sources = [TextSource("subject", None), TextSource("body", None)]
    texts = [model.subject or "", body_text(model, max_chars)]
    unreadable = []
    file_identifiers = [i for i in config.identifiers.values() if isinstance(i, FileIdentifier)]
    unreadable_names = [i.name for i in config.identifiers.values() if isinstance(i, UnreadableIdentifier)]
    found: dict[str, list] = {}
    for part in model.parts:
        if part.is_text_body:
            continue
        where = f"attachment {part.name or '/'.join(part.path) or 'unnamed'}"
        index = len(sources)
        sources.append(TextSource(where, list(part.path)))
        for identifier in file_identifiers:
            if identifier.matches(part):
                found.setdefault(identifier.name, []).append((index, Match(identifier.name, 0, 0, where, where)))
        if part.inside_document:
            continue        # a document's members: their words were read through the document
        text, problem, kind = _part_text(part, budget, deadline, max_chars)
        texts.append(text)
        if problem:
            unreadable.append({"where": where, "path": list(part.path), "kind": kind, "problem": problem})
            for name in unreadable_names:
                label = f"{kind}: {problem}"
                found.setdefault(name, []).append((index, Match(name, 0, 0, label, label)))
    timed_out = False
    for source, text in zip(sources, texts):
        source.scan = config.scanner.scan(text)
        timed_out = timed_out or source.scan.timed_out
    for index, source in enumerate(sources):
        for name, matches in source.scan.matches.items():
            found.setdefault(name, []).extend((index, match) for match in matches)
    return MessageScan(sources, found, unreadable, timed_out)


def body_text(model, max_chars: int) -> str:
    """The body as written, line breaks kept: model.body_text joins lines, which would glue a list of
    card numbers into one long number. The plain-text alternative is preferred over the HTML one, so
    the same numbers are not counted twice."""
    from ...policy.context import part_text
    bodies = [p for p in model.parts if p.is_text_body]
    plain = [p for p in bodies if "html" not in (p.declared_type or "") and p.true_type != "html"]
    chosen = plain or bodies
    if not chosen:
        return model.body_text or ""
    return "\n\n".join(part_text(p, max_chars) for p in chosen)[:max_chars]


def _part_text(part, budget: Budget, deadline: float, max_chars: int) -> tuple[str, str | None, str]:
    """(text, problem, kind) of an attachment: documents by their reader, anything else as policy reads it."""
    extraction = extract_document(part, budget, deadline)
    if extraction is not None:
        return extraction.text[:max_chars], extraction.problem, extraction.kind
    if part.true_type in ("archive", "image", "audio", "video", "executable"):
        return "", None, part.true_type     # archive members are parts of their own; media holds no words
    from ...policy.context import part_text   # the policy layer's text/HTML/charset decoding
    return part_text(part, max_chars), None, part.true_type


def incident(template: str, support: list, message_scan: MessageScan) -> list[dict]:
    """One finding per place that contributed to a matched template, with masked samples only."""
    if not support:
        return [{"detail": f"dlp template {template!r} matched (nothing present that it excludes)",
                 "template": template, "identifiers": {}}]
    per_source: dict[int, dict[str, list[Match]]] = {}
    seen = set()
    for source_index, match in support:
        key = (source_index, match.identifier, match.start, match.end, match.masked)
        if key in seen:
            continue
        seen.add(key)
        per_source.setdefault(source_index, {}).setdefault(match.identifier, []).append(match)
    findings = []
    for source_index in sorted(per_source):
        source = message_scan.sources[source_index]
        by_identifier = per_source[source_index]
        counts = {name: len(matches) for name, matches in by_identifier.items()}
        summary = ", ".join(f"{count} {name}" for name, count in counts.items())
        finding = {
            "detail": f"dlp template {template!r}: {summary} in {source.where}",
            "template": template,
            "identifiers": counts,
            "where": source.where,
            "values": {name: [m.masked for m in matches[:SAMPLES_PER_IDENTIFIER]]
                       for name, matches in by_identifier.items()},
        }
        if source.path is not None:
            finding["path"] = source.path       # strip_attachments removes exactly these parts
        findings.append(finding)
    unreadable = [u for u in message_scan.unreadable]
    if unreadable:
        findings[0]["unreadable"] = [f"{u['where']}: {u['problem']}" for u in unreadable]
    return findings
