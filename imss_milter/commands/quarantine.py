"""`imss-milter quarantine list|show|release|delete|expire`: the administrator's view of held mail (SPEC §5)."""

from __future__ import annotations

import json
import sys

from imss_milter.errors import StoreError
from imss_milter.store import Store
from imss_milter.store.retention import apply_retention
from imss_milter.commands.common import positive_int

# What `quarantine list --json` promises (SPEC §5); more keys may follow them.
LIST_KEYS = ("id", "area", "time", "sender", "recipients", "subject", "size", "rules")


def register(subparsers) -> None:
    parser = subparsers.add_parser("quarantine", help="list, show, release, delete or expire held messages")
    commands = parser.add_subparsers(dest="quarantine_command", metavar="ACTION")
    commands.required = True

    listing = commands.add_parser("list", help="list quarantined (or archived) messages, newest first")
    listing.add_argument("--area", help="only this area")
    listing.add_argument("--archive", action="store_true", help="list the archive instead of the quarantine")
    listing.add_argument("--limit", type=positive_int, default=1000, metavar="N",
                         help="at most N messages (default 1000)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=cmd_list)

    show = commands.add_parser("show", help="show a held message's details and headers")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="details and headers as a JSON object")
    show.add_argument("--raw", action="store_true", help="print the whole message exactly as received")
    show.set_defaults(handler=cmd_show)

    release = commands.add_parser("release", help="deliver a held message (reinjected past the milter)")
    release.add_argument("id")
    release.add_argument("--to", action="append", metavar="ADDR",
                         help="deliver to ADDR instead of the original recipients (repeatable)")
    release.set_defaults(handler=cmd_release)

    delete = commands.add_parser("delete", help="delete a held message")
    delete.add_argument("id")
    delete.set_defaults(handler=cmd_delete)

    expire = commands.add_parser("expire", help="remove messages older than their area's retention, now")
    expire.set_defaults(handler=cmd_expire)


def _error(message: str) -> int:
    print(f"imss-milter: {message}", file=sys.stderr)
    return 1


def _unknown(qid: str) -> int:
    return _error(f"no quarantined message with id {qid}")


# --- pure formatting ---------------------------------------------------------

def list_entry(record: dict) -> dict:
    """The SPEC keys first, then the extra facts (queue_id, reason, kind, released)."""
    entry = {key: record.get(key) for key in LIST_KEYS}
    for key in ("queue_id", "reason", "kind", "released"):
        entry[key] = record.get(key)
    return entry


def _shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: list[list[str]], headings: list[str]) -> str:
    """Columns padded to their widest cell; the last column is left ragged."""
    table = [headings] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(headings) - 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def list_table(records: list[dict]) -> str:
    rows = []
    for record in records:
        rows.append([
            record["id"], record["area"], record["time"], _shorten(record["sender"] or "<>", 40),
            _shorten(", ".join(record["recipients"]), 40), str(record["size"]),
            ",".join(record["rules"]) or "-", "released" if record.get("released") else "",
            _shorten(record["subject"], 60),
        ])
    return format_table(rows, ["ID", "AREA", "TIME", "SENDER", "RECIPIENTS", "SIZE", "RULES", "STATE", "SUBJECT"])


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """(name, value) of each header of the message, unfolded; undecodable bytes are replaced, never fatal."""
    end = len(raw)
    for separator in (b"\r\n\r\n", b"\n\n"):
        position = raw.find(separator)
        if position != -1:
            end = min(end, position)
    text = raw[:end].decode("utf-8", "replace").replace("\r\n", "\n")
    fields: list[list[str]] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append([name.strip(), value.strip()])
    return [(name, value) for name, value in fields]


def show_text(record: dict, headers: list[tuple[str, str]]) -> str:
    lines = [
        f"id:          {record['id']}",
        f"kind:        {record['kind']}",
        f"area:        {record['area']}",
        f"time:        {record['time']}",
        f"queue id:    {record.get('queue_id') or '-'}",
        f"client ip:   {record.get('client_ip') or '-'}",
        f"sender:      <{record['sender']}>",
        f"recipients:  {', '.join(record['recipients']) or '-'}",
        f"size:        {record['size']}",
        f"rules:       {', '.join(record['rules']) or '-'}",
        f"reason:      {record.get('reason') or '-'}",
    ]
    if record.get("released"):
        lines.append(f"released:    {record['released']} to {', '.join(record.get('released_to') or [])}")
    lines.extend(finding_lines(record.get("findings") or []))
    lines.append("")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return "\n".join(lines)


def finding_lines(findings: list) -> list[str]:
    """What the verdict found, one line each, with the (already masked) sample values under it."""
    if not findings:
        return []
    lines = ["findings:"]
    for finding in findings:
        if not isinstance(finding, dict):
            lines.append(f"  - {finding}")
            continue
        lines.append(f"  - {finding.get('detail') or finding.get('condition') or '?'}")
        for identifier, values in (finding.get("values") or {}).items():
            lines.append(f"      {identifier}: {', '.join(map(str, values))}")
        for problem in finding.get("unreadable") or []:
            lines.append(f"      unreadable: {problem}")
    return lines


# --- handlers ----------------------------------------------------------------

def cmd_list(args, settings) -> int:
    kind = "archive" if args.archive else "quarantine"
    with Store(settings.state_dir) as store:
        records = [list_entry(r) for r in store.list(area=args.area, kind=kind, limit=args.limit)]
    if args.json:
        print(json.dumps(records, ensure_ascii=False))
    elif records:
        print(list_table(records))
    else:
        print(f"no {kind}d messages" if kind == "archive" else "no quarantined messages")
    return 0


def cmd_show(args, settings) -> int:
    with Store(settings.state_dir) as store:
        record = store.get(args.id)
        if record is None:
            return _unknown(args.id)
        raw = store.read_raw(args.id)
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return 0
    headers = header_fields(raw)
    if args.json:
        print(json.dumps({**record, "headers": [list(h) for h in headers]}, ensure_ascii=False))
    else:
        print(show_text(record, headers))
    return 0


def cmd_release(args, settings) -> int:
    host, port = settings.release_smtp
    with Store(settings.state_dir) as store:
        record = store.get(args.id)
        if record is None:
            return _unknown(args.id)
        targets = args.to or record["recipients"]
        try:
            refused = store.release(args.id, host, port, recipients=args.to)
        except StoreError as error:
            return _error(f"could not release {args.id}: {error}")
    delivered = [t for t in targets if t not in refused]
    print(f"released {args.id} from <{record['sender']}> to {', '.join(delivered)} via {host}:{port}")
    for recipient, reply in refused.items():
        print(f"refused {recipient}: {reply}")
    return 1 if refused else 0


def cmd_delete(args, settings) -> int:
    with Store(settings.state_dir) as store:
        if not store.delete(args.id):
            return _unknown(args.id)
    print(f"deleted {args.id}")
    return 0


def cmd_expire(args, settings) -> int:
    with Store(settings.state_dir) as store:
        removed = apply_retention(store, settings)
    print(f"expired {removed['quarantine']} quarantined and {removed['archive']} archived messages")
    return 0
