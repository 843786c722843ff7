"""`imss-milter update [--source URL|DIR] [--component C]`, `update status`, `update build`, `update keygen`
and `imss-milter rollback` (SPEC §5): the command-line side of imss_milter.updates."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from imss_milter.updates import (UpdateError, build_bundle, generate_key, rollback, run_update, status,
                                 update_config)
from imss_milter.updates.layout import state_problem

log = logging.getLogger(__name__)


def accept_config(parser) -> None:
    """--config after `update status|build|keygen` too, as after every other command (cli.py gives
    the first-level commands this; nested actions need it here). SUPPRESS keeps a --config given
    before the command when none is given after it."""
    parser.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                        help="main config file (as before the command)")


def register(subparsers) -> None:
    update = subparsers.add_parser("update", help="install pattern updates (status, build and keygen below)")
    update.add_argument("--source", metavar="URL|DIR", help="update source (default: updates.source)")
    update.add_argument("--component", action="append", metavar="C",
                        help="only this component, repeatable (default: updates.components, else all offered)")
    update.add_argument("--force", action="store_true",
                        help="reinstall the offered version even if it is current or was rolled back")
    update.add_argument("--json", action="store_true", help="print the outcome per component as JSON")
    update.set_defaults(handler=cmd_update)
    actions = update.add_subparsers(dest="update_command", metavar="ACTION")

    show = actions.add_parser("status", help="installed version, time, source and kept versions per component")
    show.add_argument("--json", action="store_true", help="print a JSON array")
    show.set_defaults(handler=cmd_status)
    accept_config(show)

    build = actions.add_parser("build", help="make a (signed) bundle from DIR/<component>/ for publishing")
    build.add_argument("directory", metavar="DIR")
    build.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to create or add to")
    build.add_argument("--version", dest="bundle_version", metavar="V",
                       help="version of every component in it (default: UTC date.time)")
    build.add_argument("--key", metavar="KEY.pem", help="Ed25519 private key to sign the manifest with")
    build.add_argument("--component", action="append", metavar="C", help="only this component, repeatable")
    build.set_defaults(handler=cmd_build)
    accept_config(build)

    keygen = actions.add_parser("keygen", help="make an Ed25519 signing key for publishers")
    keygen.add_argument("key_file", metavar="KEY.pem")
    keygen.set_defaults(handler=cmd_keygen)
    accept_config(keygen)

    back = subparsers.add_parser("rollback", help="switch pattern components back to a kept version")
    back.add_argument("--component", metavar="C", help="component (default: those the last update installed)")
    back.add_argument("--to", metavar="VERSION", help="kept version to switch to (default: the one before)")
    back.add_argument("--json", action="store_true", help="print the outcome per component as JSON")
    back.set_defaults(handler=cmd_rollback)


def event_sink(settings):
    """System events go to the store `imss-milter logs` reads; a missing store never fails the command."""
    def write(category: str, event: str, detail: dict) -> None:
        try:
            from imss_milter.store import Store
            with Store(settings.state_dir) as store:
                store.log_event(category, event, detail)
        except Exception as exc:   # noqa: BLE001 - the update itself is what matters
            log.warning("cannot record the %s event: %s", event, exc)
            return
        _give_store_back(settings.state_dir)
    return write


def _give_store_back(state_dir: str) -> None:
    """Run as root, SQLite may have created its -wal/-shm files as root: give them to the owner of
    state_dir, or the daemon (as its service user) could no longer write its own log."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(state_dir)
    except OSError:
        return
    for name in os.listdir(state_dir):
        if name.startswith("imss.db"):
            path = os.path.join(state_dir, name)
            try:
                if os.stat(path).st_uid != owner.st_uid:
                    os.chown(path, owner.st_uid, owner.st_gid)
            except OSError:
                pass


def print_outcomes(outcomes, as_json: bool) -> int:
    if as_json:
        print(json.dumps([o.to_json() for o in outcomes]))
    else:
        for outcome in outcomes:
            print(outcome.line())
    return 1 if any(o.failed for o in outcomes) else 0


def cmd_update(args, settings) -> int:
    update_config(settings)          # a bad updates: section is reported with file:line first
    outcomes = run_update(settings, source=args.source, components=args.component, force=args.force,
                          events=event_sink(settings))
    for warning in getattr(outcomes, "warnings", []):
        print(f"imss-milter: warning: {warning}", file=sys.stderr)
    return print_outcomes(outcomes, args.json)


def cmd_rollback(args, settings) -> int:
    outcomes = rollback(settings, component=args.component, to=args.to, events=event_sink(settings))
    return print_outcomes(outcomes, args.json)


def cmd_status(args, settings) -> int:
    # a damaged state.json is said (and the exit status says it); the versions still come from current/
    problem = state_problem(settings.patterns_dir)
    if problem:
        print(f"imss-milter: {problem}: move it aside (mv it to state.json.damaged); update and rollback "
              "refuse to run until then", file=sys.stderr)
    rows = status(settings)
    if args.json:
        print(json.dumps(rows))
        return 1 if problem else 0
    for row in rows:
        version = row["version"] or "(shipped seed)"
        print(f"{row['component']}: {version}")
        if row["version"]:
            signed = "signed" if row["signed"] else "unsigned"
            print(f"  installed {row['installed_at']} from {row['source']} ({signed})")
        if row["previous"]:
            print(f"  previous: {', '.join(row['previous'])}")
        if row["rolled_back"]:
            print(f"  rolled back (not reinstalled): {', '.join(row['rolled_back'])}")
        last = row.get("last_result")
        if last:
            reason = f": {last['reason']}" if last.get("reason") else ""
            print(f"  last: {last['time']} {last['result']} {last.get('version') or ''}{reason}".rstrip())
    return 1 if problem else 0


def cmd_build(args, settings) -> int:
    manifest = build_bundle(args.directory, args.out, version=args.bundle_version, key_path=args.key,
                            components=args.component)
    for name, entry in sorted(manifest.components.items()):
        print(f"{name} {entry.version}: {len(entry.files)} file(s), {entry.size} bytes")
    print(f"bundle in {args.out} ({'signed' if args.key else 'UNSIGNED: gateways with a public_key refuse it'})")
    return 0


def cmd_keygen(args, settings) -> int:
    try:
        pem, raw = generate_key(args.key_file)
    except OSError as exc:
        raise UpdateError(f"cannot write {args.key_file}: {exc.strerror}") from None
    print(f"private key written to {args.key_file}: keep it on the publishing host only", file=sys.stderr)
    print("public key for updates.public_key (either form):")
    print(pem.strip())
    print(raw)
    return 0
