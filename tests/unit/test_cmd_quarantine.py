"""`imss-milter quarantine` sub-commands: list/show/delete/expire output and exit codes (release: test_store_release)."""

import argparse
import json
import time
from dataclasses import dataclass, field

import pytest

from imss_milter.commands import quarantine as command
from imss_milter.policy.types import Envelope
from imss_milter.store import Store
from imss_milter.store.retention import apply_retention

RAW = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\n"
       b"X-Long: first part\r\n\tsecond part\r\n\r\nbody text\r\n")


@dataclass
class Area:
    retention_days: int


@dataclass
class FakeSettings:
    state_dir: str
    release_smtp: tuple = ("127.0.0.1", 10026)
    quarantine_areas: dict = field(default_factory=dict)
    archive_areas: dict = field(default_factory=dict)


@pytest.fixture
def settings(tmp_path):
    return FakeSettings(str(tmp_path / "state"))


def hold(settings, area="default", kind="quarantine", sender="alice@example.org", subject="café menu"):
    with Store(settings.state_dir) as store:
        envelope = Envelope(sender=sender, recipients=["bob@example.com", "carol@example.com"], queue_id="9QZ")
        return store.quarantine(area, RAW, envelope, subject, ["block-executables", "tag"], kind=kind)


def parse(argv):
    parser = argparse.ArgumentParser(prog="imss-milter")
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv, settings):
    args = parse(argv)
    return args.handler(args, settings)


def test_list_json_has_spec_keys(settings, capsys):
    first = hold(settings)
    second = hold(settings, area="spam", sender="")
    assert run(["quarantine", "list", "--json"], settings) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed] == [second, first]
    assert list(listed[0])[:8] == ["id", "area", "time", "sender", "recipients", "subject", "size", "rules"]
    assert listed[1]["area"] == "default" and listed[1]["sender"] == "alice@example.org"
    assert listed[1]["recipients"] == ["bob@example.com", "carol@example.com"]
    assert listed[1]["size"] == len(RAW) and listed[1]["rules"] == ["block-executables", "tag"]
    assert listed[1]["subject"] == "café menu"


def test_list_filters_area_archive_and_limit(settings, capsys):
    hold(settings, area="default")
    spam = hold(settings, area="spam")
    archived = hold(settings, area="legal", kind="archive")
    run(["quarantine", "list", "--json", "--area", "spam"], settings)
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [spam]
    run(["quarantine", "list", "--json", "--archive"], settings)
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [archived]
    run(["quarantine", "list", "--json", "--limit", "1"], settings)
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [spam]
    with pytest.raises(SystemExit):
        parse(["quarantine", "list", "--limit", "0"])


def test_list_table_is_aligned(settings, capsys):
    first = hold(settings)
    second = hold(settings, area="long-area-name", sender="")
    assert run(["quarantine", "list"], settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "AREA", "TIME"]
    assert lines[1].startswith(second) and lines[2].startswith(first)
    # Every column starts at the same offset on every line.
    for heading in ("AREA", "SENDER", "SIZE", "SUBJECT"):
        column = lines[0].index(heading)
        assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines[1:])
    assert "<>" in lines[1] and "café menu" in lines[2]


def test_list_when_empty(settings, capsys):
    assert run(["quarantine", "list"], settings) == 0
    assert "no quarantined messages" in capsys.readouterr().out
    assert run(["quarantine", "list", "--json"], settings) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_show_prints_metadata_and_unfolded_headers(settings, capsys):
    qid = hold(settings)
    assert run(["quarantine", "show", qid], settings) == 0
    out = capsys.readouterr().out
    assert f"id:          {qid}" in out and "sender:      <alice@example.org>" in out
    assert "rules:       block-executables, tag" in out
    assert "Subject: =?utf-8?q?caf=C3=A9?= menu" in out
    assert "X-Long: first part second part" in out
    assert "body text" not in out


def test_show_json(settings, capsys):
    qid = hold(settings)
    assert run(["quarantine", "show", qid, "--json"], settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == qid and shown["queue_id"] == "9QZ"
    assert ["From", "Alice <alice@example.org>"] in shown["headers"]


def test_show_raw_prints_exact_bytes(settings, capfdbinary):
    qid = hold(settings)
    assert run(["quarantine", "show", qid, "--raw"], settings) == 0
    assert capfdbinary.readouterr().out == RAW


def test_header_fields_survive_garbage():
    assert command.header_fields(b"\xff\xfe: x\nno colon line\nA: 1\n continued\n\nB: body") == [
        ("\ufffd\ufffd", "x"), ("A", "1 continued")]
    assert command.header_fields(b"") == []


@pytest.mark.parametrize("action", ["show", "delete", "release"])
def test_unknown_id_exits_1(settings, capsys, action):
    hold(settings)
    assert run(["quarantine", action, "20260101T000000-" + "0" * 24], settings) == 1
    assert "no quarantined message with id 20260101T000000-" in capsys.readouterr().err


def test_delete(settings, capsys):
    qid = hold(settings)
    assert run(["quarantine", "delete", qid], settings) == 0
    assert f"deleted {qid}" in capsys.readouterr().out
    with Store(settings.state_dir) as store:
        assert store.get(qid) is None


def test_apply_retention_uses_area_settings_and_defaults(settings):
    settings.quarantine_areas = {"spam": Area(7)}
    settings.archive_areas = {"legal": Area(3650)}
    spam = hold(settings, area="spam")
    default = hold(settings, area="default")
    legal = hold(settings, area="legal", kind="archive")
    other_archive = hold(settings, area="misc", kind="archive")
    with Store(settings.state_dir) as store:
        assert apply_retention(store, settings, now=time.time() + 8 * 86400) == \
            {"quarantine": 1, "archive": 0}
        assert store.get(spam) is None and store.get(default) is not None
        # quarantine default 30 days, archive default 365 days
        assert apply_retention(store, settings, now=time.time() + 31 * 86400) == \
            {"quarantine": 1, "archive": 0}
        assert apply_retention(store, settings, now=time.time() + 366 * 86400) == \
            {"quarantine": 0, "archive": 1}
        assert store.get(other_archive) is None and store.get(legal) is not None


def test_expire_command(settings, capsys):
    hold(settings)
    assert run(["quarantine", "expire"], settings) == 0
    assert "expired 0 quarantined and 0 archived messages" in capsys.readouterr().out


def test_through_the_real_cli(tmp_path, capsys):
    cli = pytest.importorskip("imss_milter.cli")
    state = tmp_path / "state"
    config = tmp_path / "imss-milter.yaml"
    config.write_text(f"state_dir: {state}\n")
    qid = hold(FakeSettings(str(state)))
    assert cli.main(["--config", str(config), "quarantine", "list", "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [qid]
    assert cli.main(["--config", str(config), "quarantine", "show", "nope"]) == 1
    assert "no quarantined message with id nope" in capsys.readouterr().err
