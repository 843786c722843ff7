"""IP Profiler over the embedded SQLite state: sliding windows, thresholds, blocks that survive a restart, DHA."""

import json
import multiprocessing
import os

import pytest

from imss_milter.sender import SenderFilter
from imss_milter.sender.config import parse_dns, parse_sender_filtering
from imss_milter.sender.state import Block, SQLiteState, count_in_window, merge_block, threshold_reached
from imss_milter.yamlconf import loads_yaml


def test_window_counts_only_events_inside_it():
    events = [100.0, 130.0, 159.0, 161.0]
    assert count_in_window(events, now=161.0, window=60) == 3     # 100 fell out, 101..161 stays
    assert count_in_window(events, now=220.0, window=60) == 1
    assert count_in_window(events, now=99.0, window=60) == 0      # nothing from the future


def test_threshold_blocks_on_the_event_that_reaches_it():
    assert not threshold_reached(9, 10)
    assert threshold_reached(10, 10)


def test_merge_never_shortens_a_block():
    long = Block("192.0.2.1", "spam", "r1", "reject", since=0, until=1000)
    short = Block("192.0.2.1", "dha", "r2", "tempfail", since=10, until=100)
    assert merge_block(long, short) == long
    longer = Block("192.0.2.1", "dha", "r3", "tempfail", since=20, until=2000)
    assert merge_block(long, longer) == Block("192.0.2.1", "dha", "r3", "tempfail", 0, 2000)
    expired = Block("192.0.2.1", "spam", "old", "reject", since=0, until=5)
    assert merge_block(expired, short) == short


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


CONFIG = """\
sender_filtering:
  approved_hosts: ["192.0.2.0/24", "*.partner.test"]
  directory:
    files: [{recipients}]
  ip_profiler:
    dha:   {{threshold: 3, window: 60s, block: 1h, action: tempfail}}
    spam:  {{threshold: 2, window: 1h, block: 30m, action: {{reject: {{code: 554, xcode: "5.7.1", text: "Too much spam"}}}}}}
"""


@pytest.fixture
def setup(tmp_path):
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("alice@example.com\n@catchall.example.com   # every address\n# bob left\n")
    section = loads_yaml(CONFIG.format(recipients=recipients), "test.yaml")["sender_filtering"]
    events = []
    clock = Clock()

    def build():
        return SenderFilter(parse_sender_filtering(section), parse_dns(None), str(tmp_path),
                            event_log=lambda category, event, detail: events.append((category, event, detail)),
                            clock=clock)
    return build, clock, events, recipients


def test_dha_unknown_recipients_are_refused_counted_then_blocked(setup):
    build, clock, events, _ = setup
    sf = build()
    ip = "203.0.113.5"
    assert sf.check_recipient(ip, "<alice@example.com>").action == "continue"
    assert sf.check_recipient(ip, "anyone@catchall.example.com").action == "continue"
    assert sf.check_recipient(ip, "someone@gmail.test").action == "continue"        # not our domain
    first = sf.check_recipient(ip, "bob@example.com")
    assert (first.action, first.code, first.xcode) == ("reject", "550", "5.1.1")
    assert sf.check_connect(ip, None).action == "continue"
    sf.check_recipient(ip, "carol@example.com")
    third = sf.check_recipient(ip, "dave@example.com")
    assert third.code == "550" and "blocked until" in third.reason
    blocked = sf.check_connect(ip, None)
    assert (blocked.action, blocked.code, blocked.xcode) == ("tempfail", "421", "4.7.1")
    assert blocked.reason.startswith("ip_profiler:dha 3 in 1m")
    # the rest of the connection is refused too, without asking the directory
    assert sf.check_recipient(ip, "alice@example.com").action == "tempfail"
    kinds = [event for _, event, _ in events]
    assert kinds.count("dha") == 3 and "block" in kinds and "ip_profiler" in kinds
    assert all(category == "sender" for category, _, _ in events)
    block_event = next(detail for _, event, detail in events if event == "block")
    assert block_event["ip"] == ip and block_event["rule"] == "ip_profiler:dha"


def test_window_slides_so_slow_probing_is_not_blocked(setup):
    build, clock, _, _ = setup
    sf = build()
    for _ in range(6):
        sf.check_recipient("203.0.113.6", "nobody@example.com")
        clock.now += 31        # at most two events in any 60 s window
    assert sf.check_connect("203.0.113.6", None).action == "continue"
    assert sf.blocked() == []


def test_blocks_survive_a_restart_and_expire(setup):
    build, clock, _, _ = setup
    sf = build()
    assert not sf.record("203.0.113.7", "spam")
    assert sf.record("203.0.113.7", "spam")
    sf.close()
    restarted = build()
    decision = restarted.check_connect("203.0.113.7", "mail.example.net")
    assert (decision.action, decision.code, decision.text) == ("reject", "554", "Too much spam")
    listed, = restarted.blocked()
    assert listed["ip"] == "203.0.113.7" and listed["reason"] == "ip_profiler:spam 2 in 1h"
    assert set(listed) >= {"ip", "reason", "since", "until"}
    clock.now += 30 * 60 + 1
    assert restarted.check_connect("203.0.113.7", None).action == "continue"
    assert restarted.blocked() == []


def test_unblock_lifts_the_block_and_resets_counters(setup):
    build, _, events, _ = setup
    sf = build()
    sf.record("203.0.113.8", "spam")
    sf.record("203.0.113.8", "spam")
    assert sf.unblock("203.0.113.8")
    assert sf.check_connect("203.0.113.8", None).action == "continue"
    assert not sf.record("203.0.113.8", "spam")        # counting starts again from zero
    assert not sf.unblock("203.0.113.9")
    assert ("sender", "unblock", {"ip": "203.0.113.8"}) in events


def test_approved_hosts_are_never_counted_or_blocked(setup):
    build, _, _, _ = setup
    sf = build()
    for _ in range(10):
        assert sf.check_recipient("192.0.2.9", "nobody@example.com").approved
        assert not sf.record("192.0.2.9", "spam")
        assert not sf.record("203.0.113.10", "spam", hostname="mx.partner.test")
    assert sf.blocked() == []
    assert sf.check_connect("203.0.113.10", "mx.partner.test").approved


def test_unknown_event_kind_is_a_programming_error(setup):
    build, _, _, _ = setup
    with pytest.raises(ValueError):
        build().record("203.0.113.1", "phish")


def test_directory_file_is_reloaded_when_it_changes(setup, monkeypatch):
    build, _, _, recipients = setup
    sf = build()
    assert sf.check_recipient("203.0.113.11", "bob@example.com").code == "550"
    recipients.write_text("alice@example.com\nbob@example.com\n")
    os.utime(recipients, ns=(1, 1))          # a different mtime even on coarse file systems
    monkeypatch.setattr(sf.directory.files, "_next_check", 0.0)
    assert sf.check_recipient("203.0.113.11", "bob@example.com").action == "continue"
    # the catch-all was removed with the rewrite
    assert sf.check_recipient("203.0.113.11", "x@catchall.example.com").action == "continue"  # no longer local


def _hammer(path, ip, count):
    state = SQLiteState(path)
    for index in range(count):
        state.add_event(ip, "spam", 1000.0 + index * 0.001, 3600)
    state.close()


def test_sqlite_state_is_shared_by_worker_processes(tmp_path):
    path = str(tmp_path / "sender.sqlite")
    SQLiteState(path).close()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_hammer, args=(path, "198.51.100.1", 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert SQLiteState(path).add_event("198.51.100.1", "spam", 1001.0, 3600) == 201


def test_cli_lists_and_unblocks(tmp_path, capsys):
    from imss_milter import cli

    config = tmp_path / "imss-milter.yaml"
    config.write_text(f"state_dir: {tmp_path}\nsender_filtering:\n  ip_profiler:\n"
                      "    virus: {threshold: 1, window: 1h, block: 1h, action: reject}\n")
    settings = cli.load_settings(str(config))
    sf = SenderFilter.from_config(settings.raw["sender_filtering"], None, settings.state_dir)
    assert sf.record("198.51.100.20", "virus")
    sf.close()
    assert cli.main(["--config", str(config), "sender", "blocked", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["ip"], b["reason"]) for b in listed] == [("198.51.100.20", "ip_profiler:virus 1 in 1h")]
    assert listed[0]["since"].endswith("Z") and listed[0]["until"] > listed[0]["since"]
    assert cli.main(["--config", str(config), "sender", "blocked"]) == 0
    assert "198.51.100.20" in capsys.readouterr().out
    assert cli.main(["--config", str(config), "sender", "unblock", "198.51.100.20"]) == 0
    assert cli.main(["--config", str(config), "sender", "unblock", "198.51.100.20"]) == 1
    assert cli.main(["--config", str(config), "sender", "unblock", "not-an-ip"]) == 2
    capsys.readouterr()
    assert cli.main(["--config", str(config), "sender", "blocked", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
