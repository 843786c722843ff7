"""URL reputation against a real rbldnsd on loopback: URIBL code zones, SURBL bitmask zones, IP zones,
refusals, a dead zone, the lookup bound and the cache."""

import os
import shutil
from types import SimpleNamespace

import pytest

from imss_milter.engines import parse_engine_sections
from imss_milter.engines.url import SCRATCH_FINDINGS, UrlLookupError, build
from imss_milter.mime import parse_message
from imss_milter.policy.types import Envelope
from imss_milter.yamlconf import loads_yaml
from tests.helpers.rbldnsd import BlackholeDns, Rbldnsd

pytestmark = pytest.mark.skipif(shutil.which("rbldnsd") is None and not os.path.exists("/usr/sbin/rbldnsd"),
                                reason="rbldnsd is not installed (apt-get install rbldnsd)")

ZONES = {
    # URIBL style: one answer code per list
    "uribl.example.test": ("dnset", "spammy.test :127.0.1.2:spam\n"
                                    "phish.test :127.0.1.4:phishing\n"
                                    "malware.test :127.0.1.5:malware\n"
                                    "odd.test :127.0.1.9:unnamed code\n"
                                    "host.shared.test :127.0.1.4:one host of a shared domain\n"),
    # SURBL style: one answer, a bit per list
    "surbl.example.test": ("dnset", "both.test :127.0.0.24:phishing and malware\n"
                                    "onlyphish.test :127.0.0.8:phishing\n"
                                    "otherbit.test :127.0.0.2:a list we do not map\n"),
    "ip.uribl.test": ("ip4set", "192.168.1.1 :127.0.0.2:listed IP\n"),
    "plain.example.test": ("dnset", "plainlisted.test :127.0.0.3:listed\n"),
    "refused.example.test": ("dnset", "phish.test :127.255.255.254:query refused\n"),
}

ENGINE = """\
engines:
  url:
    zones:
      - {zone: uribl.example.test, type: domain, codes: {"127.0.1.2": spam, "127.0.1.4": phishing, "127.0.1.5": malware}}
      - {zone: surbl.example.test, type: domain, bitmask: {8: phishing, 16: malware}}
      - {zone: ip.uribl.test, type: ip, codes: {"127.0.0.2": malware}}
%s    blocked: ["*.bad.test"]
    max_urls: %d
"""


@pytest.fixture(scope="module")
def rbldnsd():
    server = Rbldnsd(ZONES, ttl=600).start()
    yield server
    server.stop()


def make_engine(tmp_path, port, extra_zones="", max_urls=50, timeout="2s"):
    config = loads_yaml(ENGINE % (extra_zones, max_urls), "imss-milter.yaml")
    options = parse_engine_sections(config["engines"])["url"]
    settings = SimpleNamespace(raw={"dns": {"nameservers": ["127.0.0.1"], "port": port, "timeout": timeout}},
                               patterns_dir=str(tmp_path / "patterns"))
    return build(options, settings)


def html_message(body: str) -> bytes:
    return (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: links\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n")


def scan(engine, body: str, argument=()):
    model = parse_message(html_message(body))
    scratch = {}
    engine.prepare(model, Envelope(), scratch)
    return engine.check("url.reputation", argument, model, Envelope(), scratch), scratch


def test_listed_url_is_found_with_the_code_category(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    findings, scratch = scan(engine, '<a href="http://login.phish.test/account">Your bank</a>', ("phishing",))
    [finding] = findings
    assert finding["category"] == "phishing"
    assert finding["name"] == "uribl.example.test"
    assert finding["url"] == "http://login.phish.test/account"
    assert finding["domain"] == "phish.test"        # the registered domain was listed
    assert finding["part"] == ["text/html"]
    assert scratch[SCRATCH_FINDINGS] == [{"url": "http://login.phish.test/account", "domain": "phish.test",
                                          "zone": "uribl.example.test", "category": "phishing",
                                          "detail": finding["detail"]}]


def test_other_categories_do_not_match_but_true_does(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    assert scan(engine, '<a href="http://malware.test/x.exe">update</a>', ("phishing",))[0] == []
    [finding] = scan(engine, '<a href="http://malware.test/x.exe">update</a>', ())[0]
    assert finding["category"] == "malware"


def test_unnamed_code_is_not_a_listing(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    assert scan(engine, "see http://odd.test/ now")[0] == []


def test_full_host_is_asked_when_only_it_is_listed(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    [finding] = scan(engine, "go to http://host.shared.test/x", ("phishing",))[0]
    assert finding["domain"] == "host.shared.test"
    assert scan(engine, "go to http://other.shared.test/x")[0] == []


def test_bitmask_zone_gives_every_category_of_its_bits(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    findings = scan(engine, '<a href="http://www.both.test/">x</a>')[0]
    assert sorted(f["category"] for f in findings) == ["malware", "phishing"]
    assert {f["name"] for f in findings} == {"surbl.example.test"}
    assert [f["category"] for f in scan(engine, "http://onlyphish.test/")[0]] == ["phishing"]
    assert scan(engine, "http://otherbit.test/")[0] == []      # a bit the config does not map


def test_ip_zone_is_asked_in_reversed_octets_for_any_ip_form(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    for written in ("http://192.168.1.1/", "http://3232235777/", "http://0xC0.0xA8.1.1/", "http://0300.0250.1.1/"):
        [finding] = scan(engine, f'<a href="{written}">x</a>', ("malware",))[0]
        assert finding["name"] == "ip.uribl.test"
        assert finding["url"] == "http://192.168.1.1/"
    assert rbldnsd.queries_for("1.1.168.192.ip.uribl.test") == 1     # then the cache answered


def test_tricks_do_not_hide_a_listed_host(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    tricks = [
        '<a href="http://paypal.com@phish.test/login">PayPal</a>',
        '<a href="http://phish&#x2e;test/">x</a>',
        "<a href='http://PHISH.test./'>x</a>",
        '<a href=http://phish.test/unquoted>x</a>',
        '<a href="http://phi\n  sh.test/">x</a>'.replace("\n  ", "\n"),
        "<p>just text www.phish.test/login here</p>",
    ]
    for body in tricks:
        findings = scan(engine, body, ("phishing",))[0]
        assert [f["domain"] for f in findings] == ["phish.test"], body


def test_clean_url_has_no_finding(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port)
    findings, scratch = scan(engine, '<a href="https://www.clean.test/">clean</a> http://example.co.uk/')
    assert findings == []
    assert scratch[SCRATCH_FINDINGS] == []


def test_zone_without_codes_lists_with_its_name_as_category(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port, extra_zones="      - {zone: plain.example.test}\n")
    [finding] = scan(engine, "http://plainlisted.test/", ("plain.example.test",))[0]
    assert finding["category"] == "plain.example.test"


def test_refused_answer_is_an_error_not_a_listing(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port,
                         extra_zones="      - {zone: refused.example.test, codes: {\"127.0.0.2-127.255.254.255\": x}}\n")
    # the other zones list phish.test as phishing: that listing stands
    assert [f["name"] for f in scan(engine, "http://phish.test/", ("phishing",))[0]] == ["uribl.example.test"]
    # but nothing the refused zone could have said is known: a question it might answer raises
    with pytest.raises(UrlLookupError, match="refused.example.test"):
        scan(engine, "http://phish.test/", ("x",))


def test_local_blocked_list_from_config_and_pattern_files(tmp_path, rbldnsd):
    url_dir = tmp_path / "patterns" / "current" / "url"
    url_dir.mkdir(parents=True)
    (url_dir / "blocked.txt").write_text("# local\nshared.test/~mallory/* malware\n")
    engine = make_engine(tmp_path, rbldnsd.port)
    [finding] = scan(engine, "http://cdn.bad.test/x")[0]
    assert (finding["name"], finding["category"]) == ("blocked", "blocked")
    [finding] = scan(engine, "http://shared.test/~mallory/kit.zip", ("malware",))[0]
    assert finding["name"] == "blocked"
    assert scan(engine, "http://shared.test/~alice/")[0] == []


def test_lookups_are_bounded_by_max_urls(tmp_path, rbldnsd):
    engine = make_engine(tmp_path, rbldnsd.port, max_urls=3)
    padding = " ".join(f"http://pad{n}.test/" for n in range(3))
    findings, scratch = scan(engine, padding + " http://spammy.test/")
    assert findings == []                           # the 4th host was never asked
    assert rbldnsd.queries_for("spammy.test.uribl.example.test") == 0
    assert scratch["url.scan"].hosts_looked_up == 3


def test_dead_blocklist_raises_for_the_on_error_path(tmp_path):
    with BlackholeDns() as dead:
        engine = make_engine(tmp_path, dead.port, timeout="0.3s")
        with pytest.raises(UrlLookupError, match="uribl.example.test"):
            scan(engine, "http://phish.test/", ("phishing",))
        assert dead.received >= 1
        # a message without URLs needs no lookup and is answered
        assert scan(engine, "no links here")[0] == []
