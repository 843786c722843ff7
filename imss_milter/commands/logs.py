"""`imss-milter logs`: search the per-message tracking records and the event log (SPEC §5, §7)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from imss_milter.store import LOG_CATEGORIES, Store, to_epoch
from imss_milter.commands.common import positive_int

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
VERDICTS = ("deliver", "reject", "tempfail", "delete", "quarantine")


def parse_time_spec(text: str, now: float | None = None) -> float:
    """`1h`/`30m`/`7d` ago, a date (`2026-12-01`, midnight UTC) or an ISO 8601 time (no zone = UTC)."""
    match = _AGO.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (time.time() if now is None else now) - amount * _UNIT_SECONDS[unit]
    try:
        return to_epoch(text)
    except ValueError:
        raise ValueError(f"expected a time such as 1h, 30m, 7d, 2026-12-01 or 2026-12-01T08:00:00Z, "
                         f"got {text!r}") from None


def _time_argument(text: str) -> float:
    try:
        return parse_time_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "logs", help="search message tracking records (or, with --events, the event log)",
        description="Prints the latest matching records, oldest first. Times are UTC.")
    parser.add_argument("--since", type=_time_argument, metavar="WHEN",
                        help="from this time: 1h, 30m, 7d (ago), 2026-12-01 or an ISO 8601 time")
    parser.add_argument("--until", type=_time_argument, metavar="WHEN", help="up to this time (same forms)")
    parser.add_argument("--sender", metavar="ADDR", help="envelope sender, or a glob such as *@example.com")
    parser.add_argument("--rcpt", metavar="ADDR", help="any recipient, address or glob")
    parser.add_argument("--subject", metavar="TEXT", help="subject contains TEXT (case-insensitive)")
    parser.add_argument("--queue-id", metavar="ID", help="Postfix queue id")
    parser.add_argument("--rule", metavar="NAME", help="policy that matched")
    parser.add_argument("--verdict", choices=VERDICTS, help="final verdict")
    parser.add_argument("--events", action="store_true", help="show policy/sender/quarantine/system events")
    parser.add_argument("--category", choices=LOG_CATEGORIES, help="event category (with --events)")
    parser.add_argument("--limit", type=positive_int, default=100, metavar="N",
                        help="at most N records (default 100)")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(handler=cmd_logs)


# --- pure formatting ---------------------------------------------------------

def message_line(record: dict) -> str:
    recipients = ",".join(f"<{r}>" for r in record.get("recipients") or []) or "-"
    parts = [
        record["time"], record.get("queue_id") or "NOQUEUE", record.get("verdict") or "-",
        f"from=<{record.get('sender') or ''}>", f"to={recipients}",
        f"rules={','.join(record.get('rules') or []) or '-'}",
        f"size={record['size'] if record.get('size') is not None else '-'}",
    ]
    if record.get("client_ip"):
        parts.append(f"client={record.get('client_name') or 'unknown'}[{record['client_ip']}]")
    if record.get("direction"):
        parts.append(f"direction={record['direction']}")
    if record.get("duration_ms") is not None:
        parts.append(f"time={record['duration_ms']:.1f}ms")
    if record.get("quarantine_id"):
        parts.append(f"quarantine={record['quarantine_id']}")
    parts.append(f"subject={json.dumps(record.get('subject') or '', ensure_ascii=False)}")
    return " ".join(parts)


def event_line(record: dict) -> str:
    detail = record.get("detail")
    if not isinstance(detail, str):
        detail = "" if detail is None else json.dumps(detail, ensure_ascii=False, sort_keys=True)
    parts = [record["time"], record["category"], record["event"]]
    if record.get("queue_id"):
        parts.append(f"queue_id={record['queue_id']}")
    if record.get("rule"):
        parts.append(f"rule={record['rule']}")
    if detail:
        parts.append(detail)
    return " ".join(parts)


def query_arguments(args) -> dict:
    """Command-line options as Store.query_logs keywords."""
    return {
        "kind": "events" if args.events else "messages",
        "since": args.since, "until": args.until, "sender": args.sender, "recipient": args.rcpt,
        "subject": args.subject, "queue_id": args.queue_id, "rule": args.rule,
        "verdict": args.verdict, "category": args.category, "limit": args.limit,
    }


def cmd_logs(args, settings) -> int:
    if args.category and not args.events:
        print("imss-milter: --category selects events; add --events", file=sys.stderr)
        return 2
    if args.events:
        for_messages_only = [flag for flag, value in (("--sender", args.sender), ("--rcpt", args.rcpt),
                                                       ("--subject", args.subject), ("--verdict", args.verdict))
                             if value]
        if for_messages_only:
            print(f"imss-milter: {', '.join(for_messages_only)} filter message records, not --events",
                  file=sys.stderr)
            return 2
    with Store(settings.state_dir) as store:
        records = store.query_logs(**query_arguments(args))
    if args.json:
        print(json.dumps(records, ensure_ascii=False, default=str))
        return 0
    format_line = event_line if args.events else message_line
    for record in records:
        print(format_line(record))
    return 0
