"""The `imss-milter` command: parse arguments, load settings, wire the pieces, run the sub-command (SPEC §5)."""

from __future__ import annotations

import argparse
import email.utils
import importlib
import json
import os
import sys

from . import __version__
from .errors import ImssError
from .logsetup import setup_logging
from .policy.types import Envelope

# Sub-command modules that register themselves (each has register(subparsers)).
COMMAND_MODULES = ("quarantine", "logs", "sender", "update")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imss-milter",
                                     description="Email security gateway milter for Postfix and Sendmail.")
    parser.add_argument("--version", action="version", version=f"imss-milter {__version__}")
    config_help = ("main config file (default /etc/imss-milter/imss-milter.yaml, "
                   "or embedded defaults when it does not exist)")
    parser.add_argument("--config", "-c", metavar="FILE", help=config_help)
    # --config is accepted after the sub-command too (`imss-milter check-config --config F`, SPEC §5)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    original_add_parser = sub.add_parser

    def add_parser(name, **kwargs):
        kwargs["parents"] = [common, *kwargs.get("parents", [])]
        return original_add_parser(name, **kwargs)

    sub.add_parser = add_parser

    run = sub.add_parser("run", help="run the milter daemon (in the foreground)")
    run.add_argument("--workers", type=int, help="worker processes (default: milter.workers, 0 = one per CPU)")
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check-config", help="validate the config and rule files and print a summary")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(handler=cmd_check_config)

    scan = sub.add_parser("scan", help="scan message files with the configured rules and print the verdict")
    scan.add_argument("files", nargs="+", metavar="FILE.eml")
    scan.add_argument("--json", action="store_true", help="one JSON object per message, one per line")
    scan.add_argument("--from", dest="sender", metavar="ADDR", help="envelope sender (default: From: header)")
    scan.add_argument("--rcpt", action="append", metavar="ADDR",
                      help="envelope recipient, repeatable (default: To: and Cc: headers)")
    scan.add_argument("--ip", metavar="IP", help="client IP address")
    scan.set_defaults(handler=cmd_scan)

    reload = sub.add_parser("reload", help="validate the rules, then make the running daemon re-read them")
    reload.set_defaults(handler=cmd_reload)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ImportError:
            continue
        module.register(sub)
    return parser


def load_settings(path):
    from .settings import load_settings as load
    return load(path)


# -- run / check-config / reload ------------------------------------------------

def cmd_run(args, settings) -> int:
    from .daemon import run
    if args.workers is not None:
        import dataclasses
        settings = dataclasses.replace(settings, milter=dataclasses.replace(settings.milter, workers=args.workers))
    setup_logging(settings.logging.target, settings.logging.level, settings.logging.facility)
    return run(settings)


def cmd_check_config(args, settings) -> int:
    from .engines import COMPONENT_MODULES, component_dir
    from .policy import rules_dir_warnings
    from .runtime import Runtime
    from .updates import update_config
    runtime = Runtime(settings, store=False, sender_filter=False)
    update_config(settings)          # a bad updates: section is reported here too, with file:line
    engines = {name: {"backend": engine.options.backend, "on_error": engine.options.on_error,
                      "timeout": engine.options.timeout}
               for name, engine in sorted(runtime.rules.engines.items())}
    summary = {
        "config": settings.source or "(embedded defaults)",
        "socket": settings.milter.socket,
        "state_dir": settings.state_dir,
        "rules_dir": settings.rules_dir,
        # each component's installed version, or the shipped seed
        "patterns": {name: component_dir(settings.patterns_dir, name) for name in COMPONENT_MODULES},
        "engines": engines,
        "internal_domains": list(settings.internal_domains),
        "rules": runtime.rules.summary(),
    }
    summary["rules"]["warnings"] = rules_dir_warnings(settings.rules_dir) + list(summary["rules"].get("warnings", []))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    rules = summary["rules"]
    print(f"config:      {summary['config']}")
    print(f"socket:      {summary['socket']}")
    print(f"state_dir:   {summary['state_dir']}")
    for name, options in engines.items():
        print(f"engine:      {name} (backend {options['backend']}, on_error {options['on_error']}, "
              f"timeout {options['timeout']:g}s)")
    for name, directory in summary["patterns"].items():
        print(f"patterns:    {name}: {directory}")
    print(f"rules:       {summary['rules_dir']}")
    for key, value in rules.items():
        if key == "warnings":
            continue
        print(f"  {key}: {value if not isinstance(value, (list, tuple)) else ', '.join(map(str, value)) or '-'}")
    for warning in rules.get("warnings", []):
        print(f"warning: {warning}")
    print("configuration OK")
    return 0


def cmd_reload(args, settings) -> int:
    from .daemon import send_reload
    from .runtime import Runtime
    Runtime(settings, store=False, sender_filter=False)   # validate first: an invalid set is reported here, not only in the log
    pid = send_reload(settings.milter.pid_file)
    print(f"rules are valid; asked imss-milter (pid {pid}) to reload")
    return 0


# -- scan ---------------------------------------------------------------------

def header_addresses(raw: bytes, names) -> list[str]:
    """Addresses from headers such as To: and Cc:, separated by commas or semicolons."""
    from .mime import parse_message
    model = parse_message(raw)
    values = []
    for name in names:
        for value in model.header_values(name):
            values.append(value.replace(";", ","))
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def envelope_for(raw: bytes, args) -> Envelope:
    sender = args.sender
    if sender is None:
        senders = header_addresses(raw, ["From"])
        sender = senders[0] if senders else ""
    recipients = args.rcpt or header_addresses(raw, ["To", "Cc"])
    return Envelope(sender=sender, recipients=recipients, client_ip=args.ip)


def scan_json(path: str, result) -> dict:
    verdict = result.verdict
    return {
        "file": path,
        "verdict": verdict.action,
        "rules": list(verdict.rules),
        "modifications": [m.to_json() for m in verdict.modifications],
        "attachments": [p.to_json() for p in result.model.attachments],
        "findings": verdict.findings,
        "flags": sorted(result.model.flags),
        "direction": result.direction,
    }


def cmd_scan(args, settings) -> int:
    from .runtime import Runtime
    runtime = Runtime(settings, store=False, sender_filter=False)
    status = 0
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            print(f"imss-milter: {path}: {exc.strerror}", file=sys.stderr)
            status = 2
            continue
        try:
            result = runtime.scan(raw, envelope_for(raw, args))
        except ImssError as exc:
            print(f"imss-milter: {path}: {exc}", file=sys.stderr)
            status = 3
            continue
        report = scan_json(path, result)
        if args.json:
            print(json.dumps(report, ensure_ascii=False, default=str))
            continue
        print(f"{path}: {report['verdict']}")
        print(f"  rules: {', '.join(report['rules']) or '-'}")
        for mod in report["modifications"]:
            for kind, values in mod.items():
                print(f"  {kind}: {' '.join(map(str, values))}")
        for part in report["attachments"]:
            print(f"  attachment: {'/'.join(part['path']) or part['name'] or '(unnamed)'} "
                  f"declared={part['declared_type'] or '-'} true_type={part['true_type']} "
                  f"mime={part['mime']} size={part['size']}")
        if report["flags"]:
            print(f"  flags: {', '.join(report['flags'])}")
    return status


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        return args.handler(args, settings) or 0
    except ImssError as exc:
        print(f"imss-milter: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `imss-milter scan ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
