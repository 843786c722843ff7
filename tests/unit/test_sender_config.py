"""The sender_filtering and dns sections: valid configs build, every mistake names file, line and the expected form."""

import pytest

from imss_milter.errors import ConfigError
from imss_milter.sender import SenderFilter
from imss_milter.sender.config import parse_dns, parse_sender_filtering
from imss_milter.yamlconf import loads_yaml

SPEC_EXAMPLE = """\
dns: {nameservers: ["127.0.0.1"], port: 53, timeout: 2s}
sender_filtering:
  approved_hosts: ["192.0.2.0/24", "2001:db8::/32", "*.partner.test"]
  blocked_hosts:  ["198.51.100.7"]
  approved_senders: ["*@partner.test"]
  blocked_senders:  ["*@spam.test"]
  reputation:
    zones:
      - zone: zen.example-dnsbl.test
        codes: {"127.0.0.2": spam-source, "127.0.0.4-7": exploited, "127.0.0.10-11": dynamic}
        action: {reject: {code: 554, xcode: "5.7.1", text: "Listed by zen"}}
  ip_profiler:
    dha:    {threshold: 10, window: 60s, block: 1h, action: tempfail}
    bounce: {threshold: 20, window: 60s, block: 30m, action: tempfail}
    spam:   {threshold: 50, window: 1h,  block: 1h, action: reject}
    virus:  {threshold: 5,  window: 1h,  block: 1h, action: reject}
  state: {backend: sqlite}
"""


def load(text):
    return loads_yaml(text, "imss-milter.yaml")


def test_spec_example_is_accepted(tmp_path):
    data = load(SPEC_EXAMPLE)
    config = parse_sender_filtering(data["sender_filtering"])
    assert config.enabled
    zone, = config.zones
    assert zone.reply.code == "554" and zone.reply.text == "Listed by zen"
    assert [c.category for c in zone.codes] == ["spam-source", "exploited", "dynamic"]
    assert config.profiler["dha"].window == 60 and config.profiler["dha"].block == 3600
    assert config.profiler["spam"].reply.action == "reject"
    dns = parse_dns(data["dns"])
    assert dns.nameservers == ("127.0.0.1",) and dns.timeout == 2.0
    SenderFilter.from_config(data["sender_filtering"], data["dns"], str(tmp_path)).close()


def test_missing_section_gives_a_filter_that_allows_everything(tmp_path):
    sender_filter = SenderFilter.from_config(None, None, str(tmp_path))
    assert sender_filter.check_connect("198.51.100.7", None).action == "continue"
    assert sender_filter.check_sender("198.51.100.7", "a@spam.test").action == "continue"
    assert sender_filter.check_recipient("198.51.100.7", "nobody@example.com").action == "continue"
    assert sender_filter.blocked() == []


def error_for(text):
    data = load(text)
    with pytest.raises(ConfigError) as info:
        parse_sender_filtering(data["sender_filtering"])
    return info.value


@pytest.mark.parametrize("text, line, words", [
    ("sender_filtering:\n  aproved_hosts: []\n", 2, "unknown key 'aproved_hosts'"),
    ("sender_filtering:\n  blocked_hosts: [\"300.1.2.3\"]\n", 2, "not a valid IP"),
    ("sender_filtering:\n  reputation:\n    zones:\n      - zone: z.test\n        codes: {\"127.0.0.9-3\": x}\n", 5,
     "range like 127.0.0.4-7"),
    ("sender_filtering:\n  reputation:\n    zones:\n      - zone: z.test\n        action: drop\n", 5,
     "reject, tempfail, tag"),
    ("sender_filtering:\n  reputation:\n    zones:\n      - zone: z.test\n        action: {reject: {code: 451}}\n",
     5, "5xx SMTP code"),
    ("sender_filtering:\n  reputation:\n    zones:\n      - zone: z.test\n        ttl: 5\n", 5, "unknown key 'ttl'"),
    ("sender_filtering:\n  ip_profiler:\n    dha: {threshold: 10, window: soon, block: 1h}\n", 3,
     "duration like 30s"),
    ("sender_filtering:\n  ip_profiler:\n    dha: {threshold: 0, window: 1m, block: 1h}\n", 3, "at least 1"),
    ("sender_filtering:\n  ip_profiler:\n    dha: {threshold: 5, window: 1m, block: 1h, action: tag}\n", 3,
     "reject, tempfail"),
    ("sender_filtering:\n  ip_profiler:\n    spamm: {threshold: 5, window: 1m, block: 1h}\n", 3, "unknown key 'spamm'"),
    ("sender_filtering:\n  state: {backend: redis}\n", 2, "Redis URL"),
    ("sender_filtering:\n  state: {backend: memcached}\n", 2, "sqlite, redis"),
    ("sender_filtering:\n  directory:\n    ldap: {url: \"ldap://x\", base: \"dc=x\", filter: \"mail=%s\"}\n", 3,
     "LDAP filter"),
])
def test_mistakes_name_file_line_and_expectation(text, line, words):
    error = error_for(text)
    assert error.file == "imss-milter.yaml"
    assert error.line == line
    assert words in str(error)


@pytest.mark.parametrize("codes, words", [
    ('"10.0.0.1": spam', "outside 127.0.0.0/8"),
    ('"126.255.255.255-127.0.0.2": spam', "outside 127.0.0.0/8"),
    ('"127.255.255.254": spam', "127.255.255.0/24"),
    ('"127.0.0.2-127.255.255.255": spam', "127.255.255.0/24"),
    ('"127.0.0.3": ""', "expected a category name"),
])
def test_dnsbl_codes_that_can_never_be_a_listing_are_refused_like_the_url_engines(codes, words):
    """classify_answer never lists on such answers (outside 127/8: a wildcard zone; 127.255.255.x:
    the list refused us), so a code naming them was a silent typo; it now stops the config with its
    line, through the parser the URL engine uses too."""
    error = error_for("sender_filtering:\n  reputation:\n    zones:\n      - zone: z.test\n        codes:\n"
                      "          \"127.0.0.2\": spam\n          " + codes + "\n")
    assert error.file == "imss-milter.yaml" and error.line == 7
    assert words in str(error)


def test_missing_directory_file_is_a_config_error(tmp_path):
    data = load(f"sender_filtering:\n  directory:\n    files:\n      - {tmp_path}/missing.txt\n")
    with pytest.raises(ConfigError) as info:
        SenderFilter.from_config(data["sender_filtering"], None, str(tmp_path))
    error = info.value
    assert error.line == 4 and "missing.txt" in str(error)


def test_bad_line_in_directory_file_names_that_file_and_line(tmp_path):
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("# users\nalice@example.com\nnot an address\n")
    data = load(f"sender_filtering:\n  directory:\n    files: [{recipients}]\n")
    with pytest.raises(ConfigError) as info:
        SenderFilter.from_config(data["sender_filtering"], None, str(tmp_path))
    assert info.value.file == str(recipients) and info.value.line == 3


@pytest.mark.parametrize("text, words", [
    ("dns: {nameservers: [\"localhost\"]}\n", "IP addresses"),
    ("dns: {port: 70000}\n", "port number"),
    ("dns: {timeout: 0s}\n", "above zero"),
    ("dns: {servers: [\"127.0.0.1\"]}\n", "unknown key 'servers'"),
])
def test_dns_section_mistakes(text, words):
    with pytest.raises(ConfigError) as info:
        parse_dns(load(text)["dns"])
    assert words in str(info.value) and info.value.line == 1
