"""Sender filtering (SPEC §6): host/sender lists, DNSBL reputation, IP Profiler with DHA detection, shared state.

The milter builds one SenderFilter per worker process with
SenderFilter.from_config(...) and asks it at connect, MAIL FROM and RCPT TO.
"""

from .filter import SenderDecision, SenderFilter, block_to_dict, make_state

__all__ = ["SenderDecision", "SenderFilter", "block_to_dict", "make_state"]
