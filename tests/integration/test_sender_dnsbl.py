"""DNSBL reputation against a real rbldnsd on loopback: listings, codes, refusals, dead zones, cache."""

import shutil
import threading
import time

import pytest

from imss_milter.sender import SenderFilter
from imss_milter.yamlconf import loads_yaml
from tests.helpers.rbldnsd import BlackholeDns, Rbldnsd

pytestmark = pytest.mark.skipif(shutil.which("rbldnsd") is None and not __import__("os").path.exists(
    "/usr/sbin/rbldnsd"), reason="rbldnsd is not installed (apt-get install rbldnsd)")

ZONES = {
    # every DNSBL lists 127.0.0.2 as its test entry
    "zen.example.test": ("ip4set", "127.0.0.2 :127.0.0.2:spam source\n"
                                   "192.0.2.2 :127.0.0.2:spam source\n"
                                   "192.0.2.5 :127.0.0.5:exploited\n"
                                   "192.0.2.10 :127.0.0.10:dynamic\n"
                                   "192.0.2.3 :127.0.0.3:unnamed code\n"
                                   "192.0.2.6 :127.0.0.6:exploited\n"),
    "refused.example.test": ("ip4set", "0.0.0.0-255.255.255.255 :127.255.255.254:query refused\n"),
    "plain.example.test": ("ip4set", "192.0.2.2 :127.0.0.3:listed\n192.0.2.77 :127.0.0.9:listed\n"),
    "tagonly.example.test": ("ip4set", "192.0.2.77 :127.0.0.2:listed\n"),
    "v6.example.test": ("ip6trie", ":127.0.0.4:exploited v6\n2001:db8:bad::/48\n"),
}


@pytest.fixture(scope="module")
def rbldnsd():
    server = Rbldnsd(ZONES, ttl=600).start()
    yield server
    server.stop()


def make_filter(tmp_path, port, zones_yaml, timeout="2s", extra=""):
    text = f"""\
dns: {{nameservers: ["127.0.0.1"], port: {port}, timeout: {timeout}}}
sender_filtering:
{extra}  reputation:
    zones:
{zones_yaml}"""
    data = loads_yaml(text, "test.yaml")
    events = []
    sf = SenderFilter.from_config(data["sender_filtering"], data["dns"], str(tmp_path),
                                  event_log=lambda c, e, d: events.append((c, e, d)))
    return sf, events


ZEN = """\
      - zone: zen.example.test
        codes: {"127.0.0.2": spam-source, "127.0.0.4-7": exploited, "127.0.0.10-11": dynamic}
        action: {reject: {code: 554, xcode: "5.7.1", text: "Listed by zen"}}
"""


def test_listed_ip_is_rejected_with_the_zone_reply_and_category(tmp_path, rbldnsd):
    sf, events = make_filter(tmp_path, rbldnsd.port, ZEN)
    decision = sf.check_connect("192.0.2.2", "mail.example.net")
    assert (decision.action, decision.code, decision.xcode, decision.text) == ("reject", "554", "5.7.1",
                                                                             "Listed by zen")
    assert decision.categories == ["spam-source"]
    assert decision.reason == "dnsbl:zen.example.test 127.0.0.2 spam-source"
    assert sf.check_connect("127.0.0.2", None).action == "reject"
    assert len(events) == 2        # one record per refused connection
    category, event, detail = events[0]
    assert (category, event, detail["rule"], detail["ip"]) == ("sender", "dnsbl", "dnsbl:zen.example.test",
                                                               "192.0.2.2")
    sf.close()


def test_code_ranges_and_unnamed_codes(tmp_path, rbldnsd):
    sf, _ = make_filter(tmp_path, rbldnsd.port, ZEN)
    assert sf.check_connect("192.0.2.5", None).categories == ["exploited"]
    assert sf.check_connect("192.0.2.10", None).categories == ["dynamic"]
    assert sf.check_connect("192.0.2.3", None).action == "continue"      # 127.0.0.3 is not in codes
    assert sf.check_connect("192.0.2.99", None).action == "continue"     # NXDOMAIN
    sf.close()


def test_ipv6_clients_are_looked_up_by_nibbles(tmp_path, rbldnsd):
    zones = "      - zone: v6.example.test\n        codes: {\"127.0.0.4-7\": exploited}\n"
    sf, _ = make_filter(tmp_path, rbldnsd.port, zones)
    decision = sf.check_connect("2001:db8:bad::25", None)
    assert decision.action == "reject" and decision.categories == ["exploited"]
    assert sf.check_connect("2001:db8:600d::25", None).action == "continue"
    sf.close()


def test_refusal_answer_is_an_error_not_a_listing(tmp_path, rbldnsd):
    sf, events = make_filter(tmp_path, rbldnsd.port, "      - zone: refused.example.test\n")
    assert sf.check_connect("192.0.2.2", None).action == "continue"
    assert sf.stats()["errors"] == {"dns_error": 1}
    assert sf.stats()["dns_lookups"]["refused.example.test"] == {"error": 1}
    (_, event, detail), = events
    assert event == "dns_error" and "127.255.255.254" in detail["error"]
    sf.close()


def test_refused_rcode_is_an_error_not_a_listing(tmp_path, rbldnsd):
    # rbldnsd answers REFUSED for a zone it does not serve
    sf, _ = make_filter(tmp_path, rbldnsd.port, "      - zone: unserved.example.test\n")
    assert sf.check_connect("192.0.2.2", None).action == "continue"
    assert sf.stats()["dns_lookups"]["unserved.example.test"] == {"error": 1}
    sf.close()


def test_zone_without_codes_and_tag_action(tmp_path, rbldnsd):
    zones = ("      - zone: plain.example.test\n        action: tag\n"
             "      - zone: tagonly.example.test\n        action: tag\n")
    sf, _ = make_filter(tmp_path, rbldnsd.port, zones)
    decision = sf.check_connect("192.0.2.77", None)
    assert decision.action == "tag"
    assert decision.categories == ["plain.example.test", "tagonly.example.test"]
    sf.close()


def test_strongest_zone_action_wins(tmp_path, rbldnsd):
    zones = "      - zone: plain.example.test\n        action: tag\n" + ZEN
    sf, _ = make_filter(tmp_path, rbldnsd.port, zones)
    decision = sf.check_connect("192.0.2.2", None)
    assert decision.action == "reject" and decision.reason.startswith("dnsbl:zen.example.test")
    assert decision.categories == ["plain.example.test", "spam-source"]
    sf.close()


def test_dead_zone_costs_at_most_the_timeout_and_others_still_answer(tmp_path, rbldnsd):
    with BlackholeDns() as dead:
        zones = ZEN + f"      - zone: dead.example.test\n        nameservers: [\"127.0.0.1\"]\n        port: {dead.port}\n"
        sf, events = make_filter(tmp_path, rbldnsd.port, zones, timeout="1s")
        started = time.monotonic()
        decision = sf.check_connect("192.0.2.2", None)
        elapsed = time.monotonic() - started
        assert decision.action == "reject" and decision.categories == ["spam-source"]
        assert 0.9 <= elapsed < 1.8, elapsed
        assert dead.received >= 1
        started = time.monotonic()
        assert sf.check_connect("192.0.2.99", None).action == "continue"   # a new IP: one more timeout, no more
        assert time.monotonic() - started < 1.8
        stats = sf.stats()
        assert stats["dns_lookups"]["dead.example.test"] == {"error": 2}
        assert stats["errors"]["dns_error"] == 2
        # the failure is cached briefly: a burst from that IP does not pay the timeout per connection
        started = time.monotonic()
        for _ in range(50):
            sf.check_connect("192.0.2.99", None)
        assert time.monotonic() - started < 0.5
        sf.close()


def test_all_zones_dead_never_blocks_mail(tmp_path):
    with BlackholeDns() as dead:
        sf, _ = make_filter(tmp_path, dead.port, ZEN + "      - zone: plain.example.test\n", timeout="1s")
        started = time.monotonic()
        assert sf.check_connect("192.0.2.2", None).action == "continue"
        assert time.monotonic() - started < 1.8      # zones are queried in parallel, not one timeout each
        sf.close()


def test_a_thousand_connections_cost_one_query_per_zone(tmp_path, rbldnsd):
    zones = ZEN + "      - zone: plain.example.test\n        action: tag\n"
    sf, _ = make_filter(tmp_path, rbldnsd.port, zones)
    ip = "192.0.2.6"     # listed in zen, clean (NXDOMAIN) in plain: both answers must be cached
    logged_before = (rbldnsd.queries_for("6.2.0.192.zen.example.test"),
                     rbldnsd.queries_for("6.2.0.192.plain.example.test"))
    results = []

    def burst(count):
        for _ in range(count):
            results.append(sf.check_connect(ip, None).action)

    threads = [threading.Thread(target=burst, args=(100,)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["reject"] * 1000
    assert sf.stats()["dns_queries"] == {"zen.example.test": 1, "plain.example.test": 1}
    # and rbldnsd agrees: it saw one query per zone
    assert rbldnsd.queries_for("6.2.0.192.zen.example.test") - logged_before[0] == 1
    assert rbldnsd.queries_for("6.2.0.192.plain.example.test") - logged_before[1] == 1
    lookups = sf.stats()["dns_lookups"]
    assert lookups["zen.example.test"]["cached"] == 999 and lookups["zen.example.test"]["listed"] == 1
    assert lookups["plain.example.test"]["cached"] == 999 and lookups["plain.example.test"]["clean"] == 1
    sf.close()


def test_approved_and_blocked_hosts_come_before_dnsbl(tmp_path, rbldnsd):
    extra = '  approved_hosts: ["192.0.2.2", "*.partner.test"]\n  blocked_hosts: ["198.51.100.0/24"]\n'
    sf, _ = make_filter(tmp_path, rbldnsd.port, ZEN, extra=extra)
    assert sf.check_connect("192.0.2.2", None).approved
    assert sf.check_connect("192.0.2.5", "mx.partner.test").approved
    blocked = sf.check_connect("198.51.100.9", None)
    assert (blocked.action, blocked.code, blocked.reason) == ("reject", "554", "blocked_host:198.51.100.0/24")
    assert sf.stats()["dns_queries"] == {"zen.example.test": 0}
    sf.close()
