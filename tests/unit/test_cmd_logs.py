"""`imss-milter logs`: time specs, filters, JSON and line output."""

import argparse
import json
import time
from dataclasses import dataclass

import pytest

from imss_milter.commands import logs as command
from imss_milter.store import Store


@dataclass
class FakeSettings:
    state_dir: str


@pytest.fixture
def settings(tmp_path):
    return FakeSettings(str(tmp_path / "state"))


def parse(argv):
    parser = argparse.ArgumentParser(prog="imss-milter")
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv, settings):
    args = parse(argv)
    return args.handler(args, settings)


def seed(settings):
    now = time.time()
    with Store(settings.state_dir) as store:
        store.log_message({"time": now - 3 * 86400, "queue_id": "OLD1", "sender": "old@example.org",
                           "recipients": ["bob@example.com"], "subject": "ancient", "verdict": "deliver",
                           "size": 10, "rules": []})
        store.log_message({"time": now - 1800, "queue_id": "Q2", "sender": "alice@example.org",
                           "recipients": ["bob@example.com"], "subject": "Invoice attached", "verdict": "quarantine",
                           "rules": ["block-executables"], "size": 2048, "client_ip": "192.0.2.9",
                           "client_name": "mx.example.org", "direction": "inbound", "duration_ms": 12.25,
                           "quarantine_id": "20260101T000000-" + "b" * 24})
        store.log_message({"time": now - 60, "queue_id": "Q3", "sender": "", "recipients": ["carol@corp.test"],
                           "subject": "Undelivered", "verdict": "reject", "rules": ["dnsbl"], "size": 500})
        store.log_event("sender", "dnsbl", {"ip": "198.51.100.7", "zone": "zen"}, queue_id=None)
        store.log_event("policy", "matched", "block-executables on Q2", queue_id="Q2", rule="block-executables")


def queue_ids(argv, settings, capsys):
    assert run(argv + ["--json"], settings) == 0
    return [r["queue_id"] for r in json.loads(capsys.readouterr().out)]


def test_parse_time_spec():
    now = 1_800_000_000.0
    assert command.parse_time_spec("1h", now) == now - 3600
    assert command.parse_time_spec("30m", now) == now - 1800
    assert command.parse_time_spec("7d", now) == now - 7 * 86400
    assert command.parse_time_spec("2w", now) == now - 14 * 86400
    assert command.parse_time_spec("2026-12-01", now) == 1796083200.0          # midnight UTC
    assert command.parse_time_spec("2026-12-01T08:00:00Z", now) == 1796083200.0 + 8 * 3600
    assert command.parse_time_spec("2026-12-01T10:00:00+02:00", now) == 1796083200.0 + 8 * 3600
    for bad in ("yesterday", "1x", "", "2026-13-01"):
        with pytest.raises(ValueError, match="expected a time"):
            command.parse_time_spec(bad, now)


def test_bad_since_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        parse(["logs", "--since", "soon"])
    assert exit_info.value.code == 2


def test_filters(settings, capsys):
    seed(settings)
    assert queue_ids(["logs"], settings, capsys) == ["OLD1", "Q2", "Q3"]
    assert queue_ids(["logs", "--since", "1h"], settings, capsys) == ["Q2", "Q3"]
    assert queue_ids(["logs", "--until", "1h"], settings, capsys) == ["OLD1"]
    assert queue_ids(["logs", "--sender", "*@example.org"], settings, capsys) == ["OLD1", "Q2"]
    assert queue_ids(["logs", "--rcpt", "carol@corp.test"], settings, capsys) == ["Q3"]
    assert queue_ids(["logs", "--subject", "invoice"], settings, capsys) == ["Q2"]
    assert queue_ids(["logs", "--queue-id", "Q3"], settings, capsys) == ["Q3"]
    assert queue_ids(["logs", "--rule", "block-executables"], settings, capsys) == ["Q2"]
    assert queue_ids(["logs", "--verdict", "reject"], settings, capsys) == ["Q3"]
    assert queue_ids(["logs", "--limit", "1"], settings, capsys) == ["Q3"]


def test_json_record_shape(settings, capsys):
    seed(settings)
    run(["logs", "--json", "--queue-id", "Q2"], settings)
    (record,) = json.loads(capsys.readouterr().out)
    assert record["sender"] == "alice@example.org" and record["recipients"] == ["bob@example.com"]
    assert record["rules"] == ["block-executables"] and record["verdict"] == "quarantine"
    assert record["size"] == 2048 and record["duration_ms"] == 12.25 and record["time"].endswith("Z")


def test_human_lines(settings, capsys):
    seed(settings)
    assert run(["logs", "--since", "1h"], settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert " Q2 quarantine from=<alice@example.org> to=<bob@example.com> rules=block-executables " in lines[0]
    assert "client=mx.example.org[192.0.2.9]" in lines[0] and "time=12.2ms" in lines[0]
    assert 'subject="Invoice attached"' in lines[0]
    assert " Q3 reject from=<> to=<carol@corp.test>" in lines[1]


def test_events(settings, capsys):
    seed(settings)
    assert run(["logs", "--events", "--json"], settings) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["category"], e["event"]) for e in events] == [("sender", "dnsbl"), ("policy", "matched")]
    assert events[0]["detail"] == {"ip": "198.51.100.7", "zone": "zen"}
    assert run(["logs", "--events", "--category", "policy"], settings) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "policy matched queue_id=Q2 rule=block-executables block-executables on Q2" in line
    assert run(["logs", "--events", "--rule", "block-executables", "--json"], settings) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_option_combinations_that_make_no_sense(settings, capsys):
    seed(settings)
    assert run(["logs", "--category", "policy"], settings) == 2
    assert "--events" in capsys.readouterr().err
    assert run(["logs", "--events", "--sender", "a@b"], settings) == 2
    assert "--sender" in capsys.readouterr().err


def test_empty_store_prints_empty_array(settings, capsys):
    assert run(["logs", "--json"], settings) == 0
    assert json.loads(capsys.readouterr().out) == []
