"""DNSBL planning without a socket: query names, answer classification, code ranges, cache behaviour."""

import threading

import pytest

from imss_milter.sender import dnsbl
from imss_milter.sender.config import CodeRange, DnsConfig, Reply, ZoneConfig, parse_code_key
from imss_milter.sender.dnsbl import DnsblChecker, ZoneResult, cache_seconds, classify_answer, query_name


def ip_int(text):
    import ipaddress
    return int(ipaddress.IPv4Address(text))


def test_ipv4_query_name_reverses_octets():
    assert query_name("192.0.2.10", "zen.example.test") == "10.2.0.192.zen.example.test"
    assert query_name("127.0.0.2", "zen.example.test.") == "2.0.0.127.zen.example.test"


def test_ipv6_query_name_reverses_every_nibble():
    name = query_name("2001:db8::1", "v6.test")
    labels = name.split(".")
    assert labels[:4] == ["1", "0", "0", "0"]
    assert labels[28:32] == ["1", "0", "0", "2"]
    assert labels[32:] == ["v6", "test"]
    assert len(labels) == 34


def test_query_name_accepts_mta_forms_and_refuses_garbage():
    assert query_name("IPv6:2001:db8::1", "z.test") == query_name("2001:db8::1", "z.test")
    assert query_name("[192.0.2.1]", "z.test") == "1.2.0.192.z.test"
    assert query_name("::ffff:192.0.2.1", "z.test") == "1.2.0.192.z.test"   # mapped IPv4 is IPv4
    assert query_name("not-an-ip", "z.test") is None
    assert query_name("", "z.test") is None


@pytest.mark.parametrize("key, expected", [
    ("127.0.0.2", ("127.0.0.2", "127.0.0.2")),
    ("127.0.0.4-7", ("127.0.0.4", "127.0.0.7")),
    ("127.0.0.10-127.0.0.11", ("127.0.0.10", "127.0.0.11")),
])
def test_code_keys_single_and_ranges(key, expected):
    assert parse_code_key(key) == (ip_int(expected[0]), ip_int(expected[1]))


@pytest.mark.parametrize("key", ["127.0.0.7-4", "127.0.0.4-300", "nonsense", "127.0.0", 5, "127.0.0.1-x"])
def test_bad_code_keys_are_refused(key):
    assert parse_code_key(key) is None


ZEN_CODES = (CodeRange(ip_int("127.0.0.2"), ip_int("127.0.0.2"), "spam-source"),
             CodeRange(ip_int("127.0.0.4"), ip_int("127.0.0.7"), "exploited"),
             CodeRange(ip_int("127.0.0.10"), ip_int("127.0.0.11"), "dynamic"))


def test_codes_map_answers_to_categories_including_ranges():
    result = classify_answer("zen.test", ["127.0.0.2", "127.0.0.6"], ZEN_CODES, ttl=120)
    assert result.status == "listed"
    assert result.categories == ("spam-source", "exploited")
    assert result.ttl == 120
    assert classify_answer("zen.test", ["127.0.0.11"], ZEN_CODES).categories == ("dynamic",)


def test_answer_codes_not_named_are_not_listings():
    result = classify_answer("zen.test", ["127.0.0.3"], ZEN_CODES)
    assert result.status == "clean"


def test_zone_without_codes_lists_any_loopback_answer_under_its_name():
    result = classify_answer("bl.test", ["127.0.0.3"], None)
    assert result.status == "listed" and result.categories == ("bl.test",)


@pytest.mark.parametrize("codes", [None, ZEN_CODES])
@pytest.mark.parametrize("answer", ["127.255.255.254", "127.255.255.252", "127.255.255.0"])
def test_refusal_answers_are_errors_never_listings(answer, codes):
    result = classify_answer("zen.test", [answer], codes)
    assert result.status == "error"
    assert "refused" in result.error


def test_refusal_wins_even_next_to_a_real_code():
    assert classify_answer("zen.test", ["127.0.0.2", "127.255.255.254"], ZEN_CODES).status == "error"


def test_answers_outside_loopback_are_errors():
    # a wildcard or expired DNSBL domain answering every name must not list the whole Internet
    assert classify_answer("dead.test", ["203.0.113.7"], None).status == "error"


def test_empty_answer_is_clean():
    assert classify_answer("zen.test", [], ZEN_CODES).status == "clean"


def test_cache_lifetime_follows_ttl_within_bounds():
    assert cache_seconds(ZoneResult("z", "listed", ttl=600)) == 600
    assert cache_seconds(ZoneResult("z", "clean", ttl=0)) == dnsbl.MIN_CACHE_SECONDS
    assert cache_seconds(ZoneResult("z", "clean", ttl=10**9)) == dnsbl.MAX_CACHE_SECONDS
    assert cache_seconds(ZoneResult("z", "error", ttl=600)) == dnsbl.ERROR_CACHE_SECONDS


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def checker_with_counting_lookup(monkeypatch, results, delay=None):
    zones = (ZoneConfig("a.test", None, Reply("reject")), ZoneConfig("b.test", None, Reply("tag")))
    clock = FakeClock()
    checker = DnsblChecker(zones, DnsConfig(nameservers=("127.0.0.1",), port=9, timeout=1.0), clock=clock)
    calls = []

    def make_lookup(zone):
        def lookup(ip):
            calls.append((zone, ip))
            if delay is not None:
                delay.wait(2)
            return results[zone]
        return lookup

    for zone, resolver in checker.resolvers.items():
        monkeypatch.setattr(resolver, "lookup", make_lookup(zone))
    return checker, clock, calls


def test_cache_answers_repeats_until_ttl_then_asks_again(monkeypatch):
    results = {"a.test": ZoneResult("a.test", "listed", ("a.test",), ("127.0.0.2",), ttl=60),
               "b.test": ZoneResult("b.test", "clean", ttl=30)}
    checker, clock, calls = checker_with_counting_lookup(monkeypatch, results)
    first = checker.check("192.0.2.1")
    assert [r.status for r in first.results] == ["listed", "clean"]
    for _ in range(100):
        again = checker.check("192.0.2.1")
    assert [r.cached for r in again.results] == [True, True]
    assert len(calls) == 2
    clock.now += 31                      # the negative answer expires first
    checker.check("192.0.2.1")
    assert calls[2:] == [("b.test", "192.0.2.1")]
    checker.close()


def test_concurrent_checks_share_one_query_in_flight(monkeypatch):
    gate = threading.Event()
    results = {"a.test": ZoneResult("a.test", "clean", ttl=60), "b.test": ZoneResult("b.test", "clean", ttl=60)}
    checker, _, calls = checker_with_counting_lookup(monkeypatch, results, delay=gate)
    threads = [threading.Thread(target=checker.check, args=("192.0.2.9",)) for _ in range(20)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert sorted(calls) == [("a.test", "192.0.2.9"), ("b.test", "192.0.2.9")]
    checker.close()
