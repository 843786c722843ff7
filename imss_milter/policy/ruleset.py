"""A compiled rule set and its evaluation: envelope + message model -> Verdict.

Everything is compiled at load (policy/loader.py); evaluate() only runs
routes and conditions top to bottom, collects matched policies, and picks
the strongest terminal action. A RuleSet is immutable once built, so
threads can share it and a reload simply swaps in a new one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..mime.model import Limits, MessageModel
from .actions import CompiledActions
from .addresses import ANY, Selector
from .conditions import Condition, engines_of, matched_paths
from .context import EvalContext, normalise_address
from .types import ACTION_STRENGTH, Envelope, Modification, Verdict


@dataclass(frozen=True)
class Route:
    """Who a policy applies to; `to` holds when at least one recipient matches (and is not excepted)."""

    sender: Selector = ANY
    recipients: Selector = ANY
    except_sender: Selector | None = None
    except_recipients: Selector | None = None

    def matches(self, sender: str, recipients: list[str]) -> bool:
        if not self.sender.matches(sender):
            return False
        if self.except_sender is not None and self.except_sender.matches(sender):
            return False
        if self.recipients.match_any and self.except_recipients is None:
            return True
        return any(self.recipients.matches(rcpt) and not (
            self.except_recipients is not None and self.except_recipients.matches(rcpt)) for rcpt in recipients)


@dataclass(frozen=True)
class Policy:
    name: str
    enabled: bool
    route: Route
    condition: Condition | None
    actions: CompiledActions | None
    final: bool
    file: str | None
    line: int | None
    description: str = ""


@dataclass
class RuleSet:
    """The policies of all rule files, in evaluation order, ready to evaluate()."""

    policies: list[Policy]
    groups: dict
    lists: dict
    files: list[str]
    limits: Limits = field(default_factory=Limits)
    dlp: list = field(default_factory=list)            # raw `dlp:` sections (LDict), for the DLP engine
    engines_used: dict = field(default_factory=dict)   # engine name -> condition names using it
    engines: dict = field(default_factory=dict)        # pattern engines built with these rules (runtime)
    warnings: list[str] = field(default_factory=list)

    @property
    def enabled_policies(self) -> list[Policy]:
        return [policy for policy in self.policies if policy.enabled]

    def routed(self, envelope: Envelope) -> list[Policy]:
        """The enabled policies whose route matches this envelope, in evaluation order.

        Policies that share a route (most of a rule set routes `any` or `internal`) cost one
        match; runtime.scan computes this once for engines_for() and evaluate()."""
        sender = normalise_address(envelope.sender)
        recipients = [normalise_address(rcpt) for rcpt in envelope.recipients]
        decided: dict = {}
        found = []
        for policy, slot, route in self._routing:
            matched = decided.get(slot)
            if matched is None:
                matched = decided[slot] = route.matches(sender, recipients)
            if matched:
                found.append(policy)
        return found

    @functools.cached_property
    def _route_slots(self) -> dict[int, int]:
        """id(policy) -> the number of its route among the distinct routes (equal routes share one)."""
        slots: dict[Route, int] = {}
        return {id(policy): slots.setdefault(policy.route, len(slots)) for policy in self.policies}

    @functools.cached_property
    def _routing(self) -> list[tuple]:
        """(policy, route slot, route) of each enabled policy, in order: what routed() walks,
        worked out once per rule set."""
        slots = self._route_slots
        return [(policy, slots[id(policy)], policy.route) for policy in self.policies if policy.enabled]

    @functools.cached_property
    def _policy_engines(self) -> dict[int, frozenset]:
        """id(policy) -> the engines its conditions may ask (engines_of, once per rule set)."""
        return {id(policy): frozenset(engines_of(policy.condition)) for policy in self.policies}

    def engines_for(self, envelope: Envelope, routed: list[Policy] | None = None) -> set[str]:
        """The engines the enabled policies whose route matches this envelope may ask."""
        needed: set[str] = set()
        of_policy = self._policy_engines
        for policy in routed if routed is not None else self.routed(envelope):
            engines = of_policy.get(id(policy))
            if engines is None:            # a policy of no rule set (built by hand)
                engines = engines_of(policy.condition)
            if engines:
                needed |= engines
        return needed

    def required_engines(self) -> set[str]:
        """Engine names (antivirus, spam, dlp, url, sender_reputation) some enabled policy asks."""
        return set(self.engines_used)

    def evaluate(self, envelope: Envelope, model: MessageModel,
                 engines: Mapping[str, Any] | None = None, scratch: dict | None = None,
                 routed: list[Policy] | None = None) -> Verdict:
        """Run every enabled policy in order; the strongest terminal action of the matches wins.

        `scratch` is the engines' per-message state (what their prepare() already found);
        `routed` is what routed(envelope) returned, when the caller has it."""
        ctx = EvalContext(envelope, model, engines, self.limits)
        if scratch is not None:
            ctx.engine_scratch = scratch
        verdict = Verdict()
        best = 0
        matched_any_terminal = False
        for policy in routed if routed is not None else self.routed(envelope):
            ctx.rule = policy.name
            evidence = policy.condition.check(ctx) if policy.condition is not None else [
                {"condition": "route", "detail": "route matched; policy has no conditions"}]
            if evidence is None:
                continue
            verdict.rules.append(policy.name)
            verdict.findings += [{"rule": policy.name, **item} for item in evidence]
            terminal = policy.actions.terminal
            if terminal is not None and ACTION_STRENGTH[terminal.action] > best:
                best = ACTION_STRENGTH[terminal.action]
                matched_any_terminal = True
                verdict.action = terminal.action
                verdict.deciding_rule = policy.name
                verdict.reply = terminal.reply
                verdict.quarantine_area = terminal.area
            verdict.modifications += self._modifications(policy, evidence)
            if policy.final:
                break
        if not matched_any_terminal:
            verdict.action = "deliver"
        verdict.findings += ctx.notes
        return verdict

    @staticmethod
    def _modifications(policy: Policy, evidence: list[dict]) -> list[Modification]:
        found = []
        for modification in policy.actions.modifications:
            if modification.kind == "strip_attachments":
                # the parts this policy's conditions pointed at; () means every attachment
                modification = Modification("strip_attachments", matched_paths(evidence))
            found.append(modification)
        return found

    def summary(self) -> dict:
        """What check-config prints about the rules."""
        return {
            "files": list(self.files),
            "policies": len(self.policies),
            "enabled": len(self.enabled_policies),
            "policy_names": [policy.name for policy in self.policies],
            "groups": sorted(self.groups),
            "lists": sorted(self.lists),
            "engines": sorted(self.engines_used),
            "warnings": list(self.warnings),
        }
