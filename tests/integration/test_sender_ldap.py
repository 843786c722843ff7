"""The recipient directory over a real OpenLDAP slapd: DHA verdicts, filter placeholders, bind, cache, outage."""

import shutil

import pytest

from imss_milter.sender import SenderFilter
from imss_milter.yamlconf import loads_yaml
from tests.helpers.slapd import ROOT_DN, ROOT_PASSWORD, SUFFIX, Slapd

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None and shutil.which("/usr/sbin/slapd") is None,
                                reason="slapd is not installed (apt-get install slapd)")

ADDRESSES = ["alice@example.com", "bob@example.com", "carol@sub.example.com", "we*ird(name)@example.com"]


@pytest.fixture(scope="module")
def slapd():
    server = Slapd(ADDRESSES).start()
    yield server
    server.close()


def make_filter(tmp_path, url, ldap_extra="", directory_extra="", dha="{threshold: 3, window: 60s, block: 1h}"):
    text = f"""\
sender_filtering:
  directory:
    ldap: {{url: "{url}", base: "{SUFFIX}", timeout: 2s{ldap_extra}}}
{directory_extra}  ip_profiler:
    dha: {dha}
"""
    events = []
    sf = SenderFilter.from_config(loads_yaml(text, "test.yaml")["sender_filtering"], None, str(tmp_path),
                                  event_log=lambda c, e, d: events.append((e, d)))
    return sf, events


def test_known_recipients_pass_unknown_get_550_and_block(tmp_path, slapd):
    sf, events = make_filter(tmp_path, slapd.url, directory_extra="    domains: [example.com, sub.example.com]\n")
    ip = "203.0.113.70"
    assert sf.check_recipient(ip, "<alice@example.com>").action == "continue"
    assert sf.check_recipient(ip, "Bob@Example.com").action == "continue"
    assert sf.check_recipient(ip, "carol@sub.example.com").action == "continue"
    assert sf.check_recipient(ip, "someone@elsewhere.test").action == "continue"    # not a local domain
    for name in ("mallory", "trent", "eve"):
        decision = sf.check_recipient(ip, f"{name}@example.com")
        assert (decision.action, decision.code, decision.xcode) == ("reject", "550", "5.1.1")
    assert sf.check_connect(ip, None).action == "tempfail"
    assert [e for e, _ in events].count("dha") == 3
    sf.close()


def test_filter_values_are_escaped(tmp_path, slapd):
    sf, _ = make_filter(tmp_path, slapd.url)
    # a wildcard in the address must not turn into an LDAP wildcard that matches alice
    assert sf.check_recipient("203.0.113.71", "a*@example.com").code == "550"
    assert sf.check_recipient("203.0.113.71", "we*ird(name)@example.com").action == "continue"
    sf.close()


def test_domain_placeholder_gives_catch_all_lookups(tmp_path, slapd):
    # %d: any address in a domain that has at least one entry is accepted (a catch-all by directory)
    sf, _ = make_filter(tmp_path, slapd.url, ldap_extra=', filter: "(mail=*@%d)"')
    assert sf.check_recipient("203.0.113.72", "anything@sub.example.com").action == "continue"
    assert sf.check_recipient("203.0.113.72", "anything@nowhere.test").code == "550"
    sf.close()


def test_authenticated_bind(tmp_path, slapd):
    sf, _ = make_filter(tmp_path, slapd.url, ldap_extra=f', bind_dn: "{ROOT_DN}", bind_password: "{ROOT_PASSWORD}"')
    assert sf.check_recipient("203.0.113.73", "alice@example.com").action == "continue"
    sf.close()
    bad, events = make_filter(tmp_path, slapd.url, ldap_extra=f', bind_dn: "{ROOT_DN}", bind_password: "wrong"')
    # a directory that cannot answer must not refuse valid mail (on_error: continue)
    assert bad.check_recipient("203.0.113.73", "nobody@example.com").action == "continue"
    assert bad.stats()["errors"] == {"directory_error": 1}
    assert events[0][0] == "directory_error" and "bind" in events[0][1]["error"]
    bad.close()


def test_answers_are_cached(tmp_path, slapd):
    sf, _ = make_filter(tmp_path, slapd.url, dha="{threshold: 1000, window: 60s, block: 1h}")
    for _ in range(200):
        assert sf.check_recipient("203.0.113.74", "alice@example.com").action == "continue"
        assert sf.check_recipient("203.0.113.74", "ghost@example.com").code == "550"
    assert sf.directory.ldap.searches == 2
    sf.close()


def test_ldap_outage_follows_on_error(tmp_path):
    server = Slapd(ADDRESSES).start()
    url = server.url
    tolerant, _ = make_filter(tmp_path, url)
    strict, _ = make_filter(tmp_path, url, directory_extra="    on_error: tempfail\n")
    assert tolerant.check_recipient("203.0.113.75", "alice@example.com").action == "continue"
    server.close()
    assert tolerant.check_recipient("203.0.113.75", "new@example.com").action == "continue"
    decision = strict.check_recipient("203.0.113.75", "new@example.com")
    assert (decision.action, decision.code, decision.xcode) == ("tempfail", "451", "4.3.0")
    assert tolerant.blocked() == []         # errors never count as unknown recipients
    tolerant.close()
    strict.close()
