"""What every spam backend shares: one result per message, sender lists, exemptions, levels, header.

A backend only scores (score_message). This layer decides the message's
standing once per message (approved sender > blocked sender > exemption
> score), keeps it in scratch, answers `spam: {score: ...}` and
`spam: {level: ...}` from it, and writes the optional score header.
"""

from __future__ import annotations

import email.utils
import math
import operator
from dataclasses import dataclass, field

from ...policy.types import Modification
from .config import SpamConfig

RESULT_KEY = "spam.result"
BASE_KEY = "spam.base"               # prepare()'s part of the result, finished at first read
MESSAGE_RAW_KEY = "message.raw"      # the raw bytes, when the runtime puts them in scratch
URL_FINDINGS_KEY = "url.findings"    # the URL engine's findings (dicts with "category")
MAX_HEADER_RULES = 20                # names in the score header: a header line must stay short
# the comparisons policy.conditions compiles `spam: {score: ">=5"}` into
COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
           "=": operator.eq, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class RuleHit:
    name: str
    score: float
    description: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "score": self.score, "description": self.description}


@dataclass
class SpamResult:
    """standing: scored | approved (never spam) | exempt (never spam) | blocked (always spam)."""

    standing: str = "scored"
    score: float = 0.0
    hits: list[RuleHit] = field(default_factory=list)
    reason: str = ""                 # why approved/exempt/blocked
    notes: list[str] = field(default_factory=list)   # e.g. a rule search that ran out of time
    extra: dict = field(default_factory=dict)        # backend facts (rspamd action, required_score)

    @property
    def never_spam(self) -> bool:
        return self.standing in ("approved", "exempt")

    def comparable_score(self) -> float | None:
        """The score conditions compare: None for never-spam, +inf for a blocked sender."""
        if self.never_spam:
            return None
        return math.inf if self.standing == "blocked" else self.score

    def describe(self) -> str:
        if self.standing != "scored":
            return f"{self.standing} ({self.reason})"
        rules = ", ".join(f"{hit.name}({hit.score:g})" for hit in self.hits) or "no rules"
        return f"score {self.score:g}: {rules}"


class SpamEngine:
    """Base of the backends: subclasses define score_message(model, envelope, scratch) -> SpamResult."""

    uses = ("url",)           # URL findings are a score input: the runtime prepares the URL engine too

    def __init__(self, config: SpamConfig, options=None):
        self.config = config
        if options is not None:
            self.options = options

    # -- the engine protocol ---------------------------------------------

    def prepare(self, model, envelope, scratch: dict) -> None:
        # the heavy part only: the URL engine's prepare may still be running alongside this one,
        # so its findings are added when the result is first read (after every prepare finished)
        if RESULT_KEY not in scratch:
            scratch[BASE_KEY] = self.decide(model, envelope, scratch)

    def check(self, condition, argument, model, envelope, scratch: dict) -> list[dict]:
        result = self.result(model, envelope, scratch)
        holds, wanted = self.answer(argument, result)
        if not holds:
            return []
        return [{"detail": f"spam {result.describe()} {wanted}", "name": "spam", "category": "spam",
                 "standing": result.standing, "score": _json_score(result),
                 "rules": [hit.to_json() for hit in result.hits]}]

    def modifications(self, scratch: dict) -> list[Modification]:
        if self.config.score_header is None:
            return []
        result = scratch.get(RESULT_KEY)
        if result is None and isinstance(scratch.get(BASE_KEY), tuple):
            result = self.finish(scratch)            # prepared, but no condition asked
        if not isinstance(result, SpamResult):
            return []
        return [Modification("add_header", (self.config.score_header, header_value(result)))]

    # -- one decision per message ----------------------------------------

    def result(self, model, envelope, scratch: dict) -> SpamResult:
        result = scratch.get(RESULT_KEY)
        if result is None:
            if BASE_KEY not in scratch:
                scratch[BASE_KEY] = self.decide(model, envelope, scratch)
            result = self.finish(scratch)
        return result

    def finish(self, scratch: dict) -> SpamResult:
        """The message's result: the backend's score plus the DNSBL and URL inputs (once)."""
        result, reputation = scratch.pop(BASE_KEY)
        if result.standing == "scored":
            for hit in input_hits(self.config, reputation, scratch):
                result.hits.append(hit)
                result.score += hit.score
            result.score = round(result.score, 3)
        scratch[RESULT_KEY] = result
        return result

    def decide(self, model, envelope, scratch: dict) -> tuple[SpamResult, list]:
        """(the standing or backend score, the client's DNSBL categories) of a message."""
        return self.standing(model, envelope, scratch), list(envelope.reputation or [])

    def standing(self, model, envelope, scratch: dict) -> SpamResult:
        config = self.config
        sender = (envelope.sender or "").strip().strip("<>").lower()
        # approved only on the envelope sender, which the admin's MTA can vouch for (SPF, auth);
        # a From header costs a spammer nothing to forge
        if config.approved is not None and sender and config.approved.match(sender):
            return SpamResult("approved", reason=f"approved sender {sender}")
        if config.blocked is not None:
            for address in [sender, *header_from_addresses(model)]:
                if address and config.blocked.match(address):
                    return SpamResult("blocked", reason=f"blocked sender {address}")
        exemption = self.exemption(model)
        if exemption:
            return SpamResult("exempt", reason=f"exemption {exemption!r}")
        return self.score_message(model, envelope, scratch)

    def exemption(self, model) -> str | None:
        matcher = self.config.exemptions
        if matcher is None:
            return None
        for text in (model.subject, model.body_text):
            found = matcher.search(text, limit=1)
            if found.hits:
                return found.hits[0].text
        return None

    def score_message(self, model, envelope, scratch: dict) -> SpamResult:   # pragma: no cover - abstract
        raise NotImplementedError

    # -- conditions --------------------------------------------------------

    def answer(self, argument, result: SpamResult) -> tuple[bool, str]:
        """Whether ("score", op, number) or ("level", name) holds for result, and how to say it."""
        score = result.comparable_score()
        if score is None:
            return False, ""
        if argument[0] == "score":
            _, op, number = argument
            return COMPARE[op](score, number), f"{op} {number:g}"
        threshold = self.config.levels[argument[1]]
        return score >= threshold, f">= {threshold:g} (level {argument[1]})"

    def reset_after_fork(self) -> None:
        """Nothing process-bound in the shared layer; backends with connections override."""


def header_from_addresses(model) -> list[str]:
    found = []
    for _, address in email.utils.getaddresses(model.header_values("From")):
        if "@" in address:
            found.append(address.strip().lower())
    return found


def input_hits(config: SpamConfig, reputation, scratch: dict) -> list[RuleHit]:
    """Scores from facts other engines found: DNSBL listings of the client and URL findings."""
    hits = []
    for category in sorted({str(c).strip().lower() for c in (reputation or []) if c}):
        score = _category_score(config.reputation_scores, category)
        if score:
            hits.append(RuleHit(f"DNSBL:{category}", score, f"client listed by a DNSBL as {category}"))
    findings = scratch.get(URL_FINDINGS_KEY)
    categories = set()
    if isinstance(findings, (list, tuple)):
        for finding in findings:
            category = finding.get("category") if isinstance(finding, dict) else None
            if isinstance(category, str) and category.strip():
                categories.add(category.strip().lower())
    for category in sorted(categories):
        score = _category_score(config.url_scores, category)
        if score:
            hits.append(RuleHit(f"URL:{category}", score, f"a URL in the message is listed as {category}"))
    return hits


def _category_score(scores: dict, category: str) -> float:
    return scores.get(category, scores.get("default", 0.0))


def _json_score(result: SpamResult):
    score = result.comparable_score()
    return None if score is None or math.isinf(score) else score


def header_value(result: SpamResult) -> str:
    """'score=5.2 rules=A,B', 'score=none approved', 'score=none exempt' or 'score=blocked'."""
    if result.never_spam:
        return f"score=none {result.standing}"
    if result.standing == "blocked":
        return "score=blocked"
    names = [hit.name for hit in result.hits]
    listed = ",".join(names[:MAX_HEADER_RULES]) + (",..." if len(names) > MAX_HEADER_RULES else "")
    return f"score={result.score:g}" + (f" rules={listed}" if names else "")
