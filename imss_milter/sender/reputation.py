"""The `sender.reputation` engine: answers rules from the DNSBL categories found at connect.

A zone whose action is `tag` lets the connection go on and leaves its
categories on the envelope; this engine lets policies act on them.
"""

from __future__ import annotations


class ReputationEngine:
    """Engine protocol of imss_milter.policy.conditions, for the sender.reputation condition."""

    def check(self, condition, argument, model, envelope, scratch) -> list[dict]:
        listed = list(getattr(envelope, "reputation", None) or [])
        wanted = set(argument or ())
        matched = [c for c in listed if not wanted or c in wanted]
        return [{"detail": f"client {envelope.client_ip} listed as {category}", "category": category}
                for category in matched]
