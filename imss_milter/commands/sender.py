"""`imss-milter sender blocked [--json]` and `imss-milter sender unblock IP`: the IP Profiler's blocks (SPEC §5, §6)."""

from __future__ import annotations

import json
import logging
import sys

from imss_milter.sender.config import parse_dns, parse_sender_filtering
from imss_milter.sender.filter import SenderFilter, make_state
from imss_milter.sender.lists import normalize_ip

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("sender", help="list or lift IP Profiler blocks")
    commands = parser.add_subparsers(dest="sender_command", metavar="ACTION")
    commands.required = True

    blocked = commands.add_parser("blocked", help="list blocked client IPs (ip, reason, since, until)")
    blocked.add_argument("--json", action="store_true", help="print a JSON array")
    blocked.set_defaults(handler=cmd_blocked)

    unblock = commands.add_parser("unblock", help="lift the block on a client IP and reset its counters")
    unblock.add_argument("ip", metavar="IP")
    unblock.set_defaults(handler=cmd_unblock)


def _event_logger(settings):
    """Unblocks are admin actions worth a line in `imss-milter logs`; a missing store never fails the command."""
    def write(category: str, event: str, detail: dict) -> None:
        try:
            from imss_milter.store import Store

            with Store(settings.state_dir) as store:
                store.log_event(category, event, detail)
        except Exception as exc:
            log.warning("cannot record the %s event: %s", event, exc)
    return write


def open_filter(settings, event_log=None) -> SenderFilter:
    """A filter over the configured state store, even when sender filtering or the profiler is off,
    so blocks left from an earlier configuration can still be listed and lifted."""
    raw = getattr(settings, "raw", {}) or {}
    config = parse_sender_filtering(raw.get("sender_filtering"))
    state = make_state(config, settings.state_dir)
    return SenderFilter(config, parse_dns(raw.get("dns")), settings.state_dir, event_log, state=state)


def format_blocks(blocks: list[dict]) -> str:
    if not blocks:
        return "no blocked IPs"
    headings = ["IP", "SINCE", "UNTIL", "REASON"]
    rows = [[b["ip"], b["since"], b["until"], b["reason"]] for b in blocks]
    widths = [max(len(row[i]) for row in [headings] + rows) for i in range(len(headings) - 1)]
    lines = []
    for row in [headings] + rows:
        lines.append("  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]))
    return "\n".join(lines)


def cmd_blocked(args, settings) -> int:
    sender_filter = open_filter(settings)
    try:
        blocks = sender_filter.blocked()
    finally:
        sender_filter.close()
    if args.json:
        print(json.dumps(blocks))
    else:
        print(format_blocks(blocks))
    return 0


def cmd_unblock(args, settings) -> int:
    if normalize_ip(args.ip) is None:
        print(f"imss-milter: {args.ip!r} is not an IP address", file=sys.stderr)
        return 2
    sender_filter = open_filter(settings, _event_logger(settings))
    try:
        removed = sender_filter.unblock(args.ip)
    finally:
        sender_filter.close()
    if not removed:
        print(f"imss-milter: {args.ip} is not blocked", file=sys.stderr)
        return 1
    print(f"unblocked {normalize_ip(args.ip)}")
    return 0
