"""Approved/blocked hosts and senders: IPv4, IPv6, CIDR, verified hostname globs, address and domain globs."""

from imss_milter.sender.lists import HostList, SenderList, normalize_address, normalize_ip, verified_hostname

HOSTS = HostList.from_patterns(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7", "*.partner.test"])


def test_host_list_matches_addresses_networks_and_names():
    assert HOSTS.match("192.0.2.200") == "192.0.2.0/24"
    assert HOSTS.match("198.51.100.7") == "198.51.100.7"
    assert HOSTS.match("198.51.100.8") is None
    assert HOSTS.match("2001:db8:1::5") == "2001:db8::/32"
    assert HOSTS.match("IPv6:2001:db8::1") == "2001:db8::/32"
    assert HOSTS.match("2001:db9::1") is None
    assert HOSTS.match("203.0.113.1", "mx1.partner.test") == "*.partner.test"
    assert HOSTS.match("203.0.113.1", "MX1.Partner.Test.") == "*.partner.test"


def test_unverified_client_names_never_match_a_glob():
    assert HOSTS.match("203.0.113.1", "unknown") is None
    assert HOSTS.match("203.0.113.1", "[203.0.113.1]") is None
    assert HOSTS.match("203.0.113.1", "partner.test") is None   # *.partner.test is subdomains only
    assert verified_hostname("unknown") is None


def test_v4_mapped_client_matches_v4_lists():
    assert HOSTS.match("::ffff:192.0.2.3") == "192.0.2.0/24"
    assert normalize_ip("garbage") is None


SENDERS = SenderList.from_patterns(["*@partner.test", "ap-*@example.com", "spam.test", "*.spam.test", "<>"])


def test_sender_list_address_and_domain_globs():
    assert SENDERS.match("alice@partner.test") == "*@partner.test"
    assert SENDERS.match("<AP-Team@Example.com>") == "ap-*@example.com"
    assert SENDERS.match("bob@example.com") is None
    assert SENDERS.match("x@spam.test") == "spam.test"
    assert SENDERS.match("x@mail.spam.test") == "*.spam.test"
    assert SENDERS.match("x@notspam.test") is None


def test_null_sender_matches_only_the_null_pattern():
    assert SENDERS.match("") == "<>"
    assert SENDERS.match("<>") == "<>"
    assert SenderList.from_patterns(["*@*"]).match("<>") is None
    assert normalize_address(None) == ""
