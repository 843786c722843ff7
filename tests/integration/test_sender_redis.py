"""Shared IP Profiler state in a real redis-server: two filters (two gateways) see each other's counters and blocks."""

import os
import shutil
import time

import pytest

from imss_milter.sender import SenderFilter
from imss_milter.sender.profiler import NOT_BLOCKED_TTL
from imss_milter.yamlconf import loads_yaml
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


def gateway(tmp_path, url, name, on_error="continue"):
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("alice@example.com\n")
    text = f"""\
sender_filtering:
  approved_hosts: ["192.0.2.1"]
  directory: {{files: ["{recipients}"]}}
  ip_profiler:
    dha:  {{threshold: 4, window: 60s, block: 1h, action: tempfail}}
    spam: {{threshold: 2, window: 1h, block: 1h, action: reject}}
  state: {{backend: redis, url: "{url}", timeout: 500ms, on_error: {on_error}}}
"""
    events = []
    state_dir = tmp_path / name
    os.makedirs(state_dir, exist_ok=True)
    sf = SenderFilter.from_config(loads_yaml(text, "test.yaml")["sender_filtering"], None, str(state_dir),
                                  event_log=lambda c, e, d: events.append((e, d)))
    return sf, events


def test_two_gateways_share_dha_counters_and_blocks(tmp_path, redis_server):
    first, _ = gateway(tmp_path, redis_server.url, "a")
    second, second_events = gateway(tmp_path, redis_server.url, "b")
    ip = "203.0.113.50"
    # two unknown recipients through each gateway: neither alone reaches 4, together they do
    assert first.check_recipient(ip, "x1@example.com").code == "550"
    assert second.check_recipient(ip, "x2@example.com").code == "550"
    assert first.check_recipient(ip, "x3@example.com").code == "550"
    assert first.check_connect(ip, None).action == "continue"
    last = second.check_recipient(ip, "x4@example.com")
    assert "blocked until" in last.reason
    # `first` asked about this IP a moment ago: a block made by another gateway reaches it within
    # NOT_BLOCKED_TTL (a state query per connection is what the short cache saves)
    time.sleep(NOT_BLOCKED_TTL + 0.1)
    for sf in (first, second):
        decision = sf.check_connect(ip, None)
        assert (decision.action, decision.code) == ("tempfail", "421")
    assert [b["ip"] for b in first.blocked()] == [ip]
    assert any(event == "block" for event, _ in second_events)
    # lifted through one gateway, lifted everywhere
    assert first.unblock(ip)
    assert second.check_connect(ip, None).action == "continue"
    assert second.blocked() == []
    first.close()
    second.close()


def test_a_block_made_by_one_gateway_is_enforced_by_the_other(tmp_path, redis_server):
    first, _ = gateway(tmp_path, redis_server.url, "a")
    second, _ = gateway(tmp_path, redis_server.url, "b")
    assert not first.record("203.0.113.51", "spam")
    assert second.record("203.0.113.51", "spam")
    decision = first.check_connect("203.0.113.51", None)
    assert (decision.action, decision.code, decision.xcode) == ("reject", "554", "5.7.1")
    blocked, = second.blocked()
    assert blocked["reason"] == "ip_profiler:spam 2 in 1h"
    first.close()
    second.close()


def test_blocks_survive_a_gateway_restart(tmp_path, redis_server):
    first, _ = gateway(tmp_path, redis_server.url, "a")
    first.record("203.0.113.52", "spam")
    first.record("203.0.113.52", "spam")
    first.close()
    restarted, _ = gateway(tmp_path, redis_server.url, "a")
    assert restarted.check_connect("203.0.113.52", None).action == "reject"
    restarted.close()


def test_approved_hosts_are_never_blocked_through_redis(tmp_path, redis_server):
    sf, _ = gateway(tmp_path, redis_server.url, "a")
    for _ in range(5):
        sf.record("192.0.2.1", "spam")
    assert sf.blocked() == []
    sf.close()


def test_redis_down_does_not_stop_mail_and_recovers(tmp_path, redis_server):
    sf, events = gateway(tmp_path, redis_server.url, "a")
    sf.record("203.0.113.53", "spam")
    redis_server.stop()
    started = time.monotonic()
    for _ in range(20):
        assert sf.check_connect("203.0.113.53", None).action == "continue"
    assert sf.check_recipient("203.0.113.53", "unknown@example.com").code == "550"   # DHA still refuses
    assert not sf.record("203.0.113.53", "spam")
    assert time.monotonic() - started < 3
    assert sf.stats()["errors"]["state_error"] >= 3
    assert [e for e, _ in events].count("state_error") == 1       # logged once, counted every time
    redis_server.start()
    time.sleep(2.1)    # the client skips Redis for 2 s after a failure instead of paying a timeout per call
    assert not sf.record("203.0.113.54", "spam")
    assert sf.record("203.0.113.54", "spam")
    assert sf.check_connect("203.0.113.54", None).action == "reject"
    sf.close()


def test_redis_down_with_on_error_tempfail(tmp_path, redis_server):
    sf, _ = gateway(tmp_path, redis_server.url, "a", on_error="tempfail")
    redis_server.stop()
    decision = sf.check_connect("203.0.113.55", None)
    assert (decision.action, decision.code, decision.xcode) == ("tempfail", "451", "4.3.0")
    assert sf.check_connect("192.0.2.1", None).approved       # approved hosts need no state
    sf.close()
