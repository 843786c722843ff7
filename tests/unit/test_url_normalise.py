"""URL normalisation: what hides a host is removed, so blocklists are asked about the real one."""

import pytest

from imss_milter.engines.url.lookup import query_names, read_bitmask
from imss_milter.engines.url.config import UrlZone
from imss_milter.engines.url.normalise import (ascii_host, normalise_url, parse_ipv4_host, registered_domain,
                                               unicode_host)
from imss_milter.sender.dnsbl import ZoneResult


def host(text):
    normal = normalise_url(text)
    return normal.host if normal else None


@pytest.mark.parametrize("written", ["http://3232235777/", "http://0xC0.0xA8.1.1/", "http://0300.0250.1.1/",
                                     "http://0xc0a80101/", "http://192.168.257/", "http://192.168.1.1./"])
def test_every_ipv4_form_is_a_dotted_quad(written):
    normal = normalise_url(written)
    assert normal.host == "192.168.1.1" and normal.is_ip


def test_numbers_out_of_range_are_not_addresses():
    assert parse_ipv4_host("256.1.1.1") is None
    assert parse_ipv4_host("1.2.3.4.5") is None
    assert parse_ipv4_host("4294967296") is None
    assert parse_ipv4_host("08.1.1.1") is None          # 08 is not octal
    assert parse_ipv4_host("1.2.3.example") is None


def test_userinfo_is_removed_and_kept_apart():
    normal = normalise_url("http://paypal.com:secure@evil.test/login")
    assert normal.host == "evil.test"
    assert normal.userinfo == "paypal.com:secure"
    assert normal.url == "http://evil.test/login"
    long_userinfo = "http://www.paypal.com.account.verify." + "x" * 300 + "@evil.test/"
    assert host(long_userinfo) == "evil.test"


def test_case_trailing_dots_ports_and_percent_encoding():
    assert normalise_url("HTTPS://WWW.Evil.TEST.:443/A").url == "https://www.evil.test/A"
    assert normalise_url("http://evil.test:8080/").url == "http://evil.test:8080/"
    assert host("http://ev%69l%2Etest/") == "evil.test"


def test_idna_both_directions():
    unicode_form = normalise_url("http://bücher.example/")
    punycode_form = normalise_url("http://XN--BCHER-KVA.example/")
    assert unicode_form.host == punycode_form.host == "xn--bcher-kva.example"
    assert unicode_form.display_host == punycode_form.display_host == "bücher.example"
    # a Cyrillic 'а' in a look-alike of paypal is looked up as its own (punycode) name
    assert host("http://p\u0430ypal.test/").startswith("xn--")
    assert ascii_host("evil\u3002test") == "evil.test"       # ideographic full stop
    assert unicode_host("plain.test") == "plain.test"


def test_tabs_newlines_and_backslashes_do_not_hide_the_host():
    assert host("http://ev\nil.te\tst/") == "evil.test"
    assert host("http:\\\\evil.test\\path") == "evil.test"
    assert host("//evil.test/x") == "evil.test"
    assert host("www.evil.test/x") == "www.evil.test"


def test_non_web_and_broken_urls_give_nothing():
    for text in ("javascript:alert(1)", "mailto:a@evil.test", "cid:part1", "/relative/path",
                 "http://", "http://exa mple.test/", "http://[zz::1]/", "http://" + "a" * 300 + ".test/"):
        assert normalise_url(text) is None, text


def test_ipv6_literal():
    normal = normalise_url("http://[2001:DB8:0::1]:8080/x")
    assert normal.host == "2001:db8::1" and normal.is_ip
    assert normal.url == "http://[2001:db8::1]:8080/x"


def test_registered_domain_from_the_public_suffix_list():
    assert registered_domain("foo.bar.example.co.uk") == "example.co.uk"
    assert registered_domain("www.example.com") == "example.com"
    assert registered_domain("a.b.example.com.au") == "example.com.au"
    assert registered_domain("x.y.evil.test") == "evil.test"     # unknown TLD: one label of suffix
    assert registered_domain("192.0.2.1") == "192.0.2.1"
    assert registered_domain("localhost") == "localhost"


def test_query_names_per_zone_type():
    domain_zone = UrlZone("uribl.example.test")
    ip_zone = UrlZone("ip.uribl.test", type="ip")
    deep = normalise_url("http://a.b.example.co.uk/")
    assert query_names(deep, domain_zone) == ["example.co.uk.uribl.example.test",
                                              "a.b.example.co.uk.uribl.example.test"]
    assert query_names(normalise_url("http://example.co.uk/"), domain_zone) == ["example.co.uk.uribl.example.test"]
    assert query_names(deep, ip_zone) == []
    ip = normalise_url("http://3232235777/")
    assert query_names(ip, ip_zone) == ["1.1.168.192.ip.uribl.test"]
    assert query_names(ip, domain_zone) == []


def test_bitmask_answers_read_as_categories():
    bits = ((8, "phishing"), (16, "malware"))
    listed = ZoneResult("surbl.test", "listed", ("surbl.test",), ("127.0.0.24",))
    assert read_bitmask(listed, bits).categories == ("phishing", "malware")
    unmapped = ZoneResult("surbl.test", "listed", ("surbl.test",), ("127.0.0.2",))
    assert read_bitmask(unmapped, bits).status == "clean"
    error = ZoneResult("surbl.test", "error", error="refused")
    assert read_bitmask(error, bits) is error
