"""The `engines.spam` section: levels, sender lists, exemptions, score inputs, score header.

Parsed once when the engine is built; every bad value is a ConfigError
with file and line (yamlconf.fail), never a surprise at scan time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ...policy.addresses import compile_globs, pattern_to_glob
from ...settings import type_name
from ...textmatch import PatternError, TextMatcher
from ...yamlconf import fail

LEVELS = ("low", "medium", "high")
# SPEC §6: "high" sensitivity catches more, so it has the lowest threshold
DEFAULT_LEVELS = {"low": 8.0, "medium": 5.0, "high": 3.0}
# scores for a client listed by a DNSBL zone (envelope.reputation categories) and for URL
# findings of the URL engine; "default" scores a category not named
DEFAULT_REPUTATION_SCORES = {"default": 3.0}
DEFAULT_URL_SCORES = {"phishing": 6.0, "malware": 6.0, "spam": 4.0, "default": 3.0}
SHARED_KEYS = ("levels", "score_header", "approved_senders", "blocked_senders", "exemptions",
               "reputation_scores", "url_scores")
EXEMPTION_KEYS = ("keywords", "expressions", "case_sensitive")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")


@dataclass(frozen=True)
class SpamConfig:
    levels: dict = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    score_header: str | None = None
    approved: object = None          # compiled glob regex of approved sender patterns, or None
    blocked: object = None
    exemptions: TextMatcher | None = None
    reputation_scores: dict = field(default_factory=dict)
    url_scores: dict = field(default_factory=dict)
    regex_timeout: float = 0.25


def parse_spam_section(section, regex_timeout: float, input_defaults: bool) -> SpamConfig:
    """The shared keys of the section. input_defaults: whether DNSBL/URL inputs score by default
    (the built-in backend; rspamd checks reputation itself, so counting it again is opt-in)."""
    section = section or {}
    return SpamConfig(
        levels=parse_levels(section),
        score_header=parse_score_header(section),
        approved=parse_senders(section, "approved_senders"),
        blocked=parse_senders(section, "blocked_senders"),
        exemptions=parse_exemptions(section, regex_timeout),
        reputation_scores=parse_scores(section, "reputation_scores",
                                       DEFAULT_REPUTATION_SCORES if input_defaults else {}),
        url_scores=parse_scores(section, "url_scores", DEFAULT_URL_SCORES if input_defaults else {}),
        regex_timeout=regex_timeout,
    )


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def parse_levels(section) -> dict:
    value = section.get("levels")
    levels = dict(DEFAULT_LEVELS)
    if value is None:
        return levels
    if not isinstance(value, dict):
        raise fail(f"engines.spam.levels: expected a mapping like {{low: 8, medium: 5, high: 3}}, "
                   f"got {type_name(value)}", section, "levels")
    for name, threshold in value.items():
        if name not in LEVELS:
            raise fail(f"engines.spam.levels: unknown level {name!r} (expected {', '.join(LEVELS)})", value, name)
        if not _number(threshold):
            raise fail(f"engines.spam.levels.{name}: expected a score threshold number, got {threshold!r}",
                       value, name)
        if threshold <= 0:
            # a clean message scores 0, so a threshold of 0 or less would call every message spam
            raise fail(f"engines.spam.levels.{name}: expected a score threshold above 0, got {threshold!r}",
                       value, name)
        levels[name] = float(threshold)
    check_level_order(levels, value)
    return levels


def check_level_order(levels: dict, given) -> None:
    """low >= medium >= high: higher sensitivity catches more, so it must have the lower threshold
    (levels not given keep their defaults, and must fit too)."""
    for stricter, looser in (("medium", "low"), ("high", "medium")):
        if levels[stricter] > levels[looser]:
            key = stricter if stricter in given else looser
            shown = {name: f"{levels[name]:g}" + ("" if name in given else ", the default")
                     for name in (stricter, looser)}
            raise fail(f"engines.spam.levels: {stricter} ({shown[stricter]}) is above {looser} "
                       f"({shown[looser]}); expected low >= medium >= high, since higher sensitivity "
                       f"has the lower threshold (default {{low: 8, medium: 5, high: 3}})", given, key)


def parse_score_header(section) -> str | None:
    name = section.get("score_header")
    if name is None or name is False:
        return None
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise fail(f"engines.spam.score_header: expected a header field name like X-IMSS-Spam-Score, "
                   f"got {name!r}", section, "score_header")
    return name


def parse_senders(section, key: str):
    """An address pattern list (*@example.com, @example.com, example.com, user@) as one regex."""
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise fail(f"engines.spam.{key}: expected a list of address patterns, got {type_name(value)}",
                   section, key)
    globs = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"engines.spam.{key}: expected an address pattern, got {type_name(item)}", value, index)
        try:
            globs.append(pattern_to_glob(item))
        except ValueError as exc:
            raise fail(f"engines.spam.{key}: {exc}", value, index) from None
    return compile_globs(globs)


def parse_exemptions(section, regex_timeout: float) -> TextMatcher | None:
    value = section.get("exemptions")
    if value is None:
        return None
    if isinstance(value, list):           # shorthand: a list of keywords
        value = {"keywords": value}
        where, where_key = section, "exemptions"
    elif isinstance(value, dict):
        where, where_key = value, None
    else:
        raise fail("engines.spam.exemptions: expected {keywords: [...], expressions: [...]} or a list of "
                   f"keywords, got {type_name(value)}", section, "exemptions")
    for key in value:
        if key not in EXEMPTION_KEYS:
            raise fail(f"engines.spam.exemptions: unknown key {key!r} (expected one of: "
                       f"{', '.join(EXEMPTION_KEYS)})", value, key)
    lists = {}
    for key in ("keywords", "expressions"):
        items = value.get(key, [])
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise fail(f"engines.spam.exemptions.{key}: expected a list of non-empty strings",
                       where, where_key or key)
        lists[key] = items
    case_sensitive = value.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise fail("engines.spam.exemptions.case_sensitive: expected true or false", value, "case_sensitive")
    if not lists["keywords"] and not lists["expressions"]:
        return None
    try:
        return TextMatcher(lists["keywords"], lists["expressions"], case_sensitive, regex_timeout)
    except PatternError as exc:
        items = value.get("expressions")
        raise fail(f"engines.spam.exemptions.expressions: {exc}",
                   *((items, exc.index) if hasattr(items, "item_line") else (where, where_key))) from None


def parse_scores(section, key: str, defaults: dict) -> dict:
    value = section.get(key)
    if value is None:
        return dict(defaults)
    if not isinstance(value, dict):
        raise fail(f"engines.spam.{key}: expected a mapping of category to score, got {type_name(value)}",
                   section, key)
    scores = {}
    for category, score in value.items():
        if not isinstance(category, str) or not _number(score):
            raise fail(f"engines.spam.{key}: expected category: score (a number), got {category!r}: {score!r}",
                       value, category)
        scores[category.strip().lower()] = float(score)
    return scores
