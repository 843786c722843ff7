"""IP Profiler: per-client-IP sliding-window counters (dha, bounce, spam, virus) that turn into temporary blocks."""

from __future__ import annotations

import time
from typing import Callable

from .config import ProfilerRule
from .state import Block, StateBackend, threshold_reached


def block_reason(rule: ProfilerRule, count: int) -> str:
    return f"ip_profiler:{rule.kind} {count} in {_human(rule.window)}"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


NOT_BLOCKED_TTL = 1.0
NOT_BLOCKED_MAX = 100_000


class IPProfiler:
    """Counts events per IP and kind; the event that reaches a threshold blocks the IP for the block time.

    Errors from the state store propagate (StateUnavailable); the caller applies on_error.
    """

    def __init__(self, rules: dict[str, ProfilerRule], state: StateBackend, clock: Callable[[], float] = time.time):
        self.rules = rules
        self.state = state
        self._clock = clock
        # "not blocked" answers, kept NOT_BLOCKED_TTL seconds: every connection asks, blocks are rare,
        # and a state query per connection was most of what sender filtering cost per message
        self._not_blocked: dict[str, float] = {}

    def record(self, ip: str, kind: str) -> Block | None:
        """Count one event; returns the block when this event caused (or extended) one."""
        rule = self.rules.get(kind)
        if rule is None:
            return None
        now = self._clock()
        count = self.state.add_event(ip, kind, now, rule.window)
        if not threshold_reached(count, rule.threshold):
            return None
        block = Block(ip=ip, kind=kind, reason=block_reason(rule, count), action=rule.reply.action,
                      since=now, until=now + rule.block)
        self._not_blocked.pop(ip, None)
        return self.state.set_block(block)

    def current_block(self, ip: str) -> Block | None:
        """The IP's block, if any. A block made by another process or gateway host is seen within
        NOT_BLOCKED_TTL seconds; one made here, at once."""
        now = self._clock()
        if self._not_blocked.get(ip, 0.0) > now:
            return None
        block = self.state.get_block(ip, now)
        if block is None:
            if len(self._not_blocked) > NOT_BLOCKED_MAX:
                self._not_blocked.clear()
            self._not_blocked[ip] = now + NOT_BLOCKED_TTL
        return block

    def blocked(self) -> list[Block]:
        return self.state.list_blocks(self._clock())

    def unblock(self, ip: str) -> bool:
        return self.state.remove_block(ip, self._clock())
