"""engines.url section, blocked-list files and the engine's answers without DNS (local list, mismatches)."""

from types import SimpleNamespace

import pytest

from imss_milter.engines import parse_engine_sections, validate_component
from imss_milter.engines.url import build
from imss_milter.engines.url.blocked import BlockedList, load_blocked_dir
from imss_milter.engines.url.config import parse_url_section
from imss_milter.engines.url.normalise import normalise_url
from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.policy import compile_rules
from imss_milter.policy.conditions import engine_condition_warnings
from imss_milter.policy.types import Envelope
from imss_milter.yamlconf import loads_yaml


def options(text):
    return parse_engine_sections(loads_yaml("engines:\n  url:\n" + text, "main.yaml")["engines"])["url"]


def settings(tmp_path):
    return SimpleNamespace(raw={}, patterns_dir=str(tmp_path / "patterns"))


def test_full_section_parses():
    config = parse_url_section(options(
        "    zones:\n"
        "      - {zone: uribl.example.test, type: domain, codes: {\"127.0.1.2\": spam, \"127.0.1.4-5\": Phishing}}\n"
        "      - {zone: surbl.example.test, bitmask: {8: phishing, \"16\": malware}}\n"
        "      - {zone: ip.uribl.test., type: ip}\n"
        "    blocked: [\"*.bad.test\"]\n"
        "    max_urls: 20\n"))
    uribl, surbl, ip = config.zones
    assert [c.category for c in uribl.codes] == ["spam", "phishing"]
    assert surbl.bitmask == ((8, "phishing"), (16, "malware"))
    assert (ip.zone, ip.type, ip.codes) == ("ip.uribl.test", "ip", None)
    assert config.blocked == ("*.bad.test",) and config.max_urls == 20


@pytest.mark.parametrize("text, line, expected", [
    ("    zonez: []\n", 3, "unknown key 'zonez'"),
    ("    zones:\n      - {zone: x.test, type: url}\n", 4, "expected one of domain, ip"),
    ("    zones:\n      - {zone: not_a_zone}\n", 4, "DNS zone name"),
    ("    zones:\n      - {zone: x.test, codes: {\"127.0.1\": spam}}\n", 4, "address like 127.0.1.2"),
    ("    zones:\n      - {zone: x.test, bitmask: {three: spam}}\n", 4, "bit value"),
    ("    zones:\n      - {zone: x.test, codes: {\"127.0.0.2\": a}, bitmask: {2: b}}\n", 4, "not both"),
    ("    zones:\n      - {zone: x.test, colour: red}\n", 4, "unknown key 'colour'"),
    ("    zones:\n      - {zone: x.test}\n      - {zone: X.test}\n", 5, "listed twice"),
    ("    max_urls: 0\n", 3, "at least 1"),
    ("    blocked: [\"two words\"]\n", 3, "without spaces"),
])
def test_mistakes_name_file_and_line(text, line, expected):
    with pytest.raises(ConfigError) as raised:
        parse_url_section(options(text))
    assert raised.value.file == "main.yaml" and raised.value.line == line
    assert expected in str(raised.value)


@pytest.mark.parametrize("codes, words", [
    ('"10.0.0.1": spam', "outside 127.0.0.0/8"),
    ('"126.255.255.255-127.0.0.2": spam', "outside 127.0.0.0/8"),
    ('"127.255.255.254": spam', "127.255.255.0/24"),
    ('"127.255.254.250-127.255.255.1": spam', "127.255.255.0/24"),
    ('"127.0.0.2-127.255.255.255": spam', "127.255.255.0/24"),
])
def test_codes_that_can_never_be_a_listing_are_refused(codes, words):
    with pytest.raises(ConfigError) as raised:
        parse_url_section(options("    zones:\n      - zone: x.test\n        codes:\n"
                                  "          \"127.0.1.2\": spam\n          " + codes + "\n"))
    assert "main.yaml:7: " in str(raised.value) and words in str(raised.value)


@pytest.mark.parametrize("key", ["0", "1", "3", "6", "256", "512", "16777216", "true"])
def test_bitmask_keys_must_be_one_bit_of_the_last_octet(key):
    with pytest.raises(ConfigError) as raised:
        parse_url_section(options("    zones:\n      - zone: x.test\n        bitmask:\n"
                                  "          8: phishing\n          " + key + ": spam\n"))
    assert "main.yaml:7: " in str(raised.value)
    assert "single bit value of the answer's last octet (2, 4, 8, 16, 32, 64 or 128)" in str(raised.value)


def test_every_bit_of_the_last_octet_but_1_and_the_listing_range_edges_are_accepted():
    config = parse_url_section(options(
        "    zones:\n"
        "      - {zone: a.test, bitmask: {2: a, 4: b, 8: c, 16: d, 32: e, 64: f, 128: g}}\n"
        "      - {zone: b.test, codes: {\"127.0.0.0-127.255.254.255\": spam}}\n"))
    assert [bit for bit, _ in config.zones[0].bitmask] == [2, 4, 8, 16, 32, 64, 128]
    assert len(config.zones[1].codes) == 1


def test_blocked_list_file_format(tmp_path):
    (tmp_path / "10-first.txt").write_text(
        "# comment\n\n*.bad.test phishing  # trailing comment\nexact.test\nshop-*.test malware\n"
        "shared.test/~mallory/* malware\nbücher.example fraud\n")
    (tmp_path / "ignored.yaml").write_text("not: read\n")
    blocked = load_blocked_dir(str(tmp_path))

    def category(url):
        hit = blocked.match(normalise_url(url))
        return hit[0] if hit else None

    assert category("http://bad.test/") == "phishing"
    assert category("http://a.b.bad.test/x") == "phishing"
    assert category("http://notbad.test/") is None
    assert category("http://exact.test/") == "blocked"
    assert category("http://www.exact.test/") is None
    assert category("http://shop-42.test/") == "malware"
    assert category("http://shared.test/~mallory/kit") == "malware"
    assert category("http://shared.test/~alice/") is None
    assert category("http://xn--bcher-kva.example/") == "fraud"


@pytest.mark.parametrize("text, line, expected", [
    ("ok.test\n*.bad.test phishing extra\n", 2, "3 fields"),
    ("x.test Not!A!Category\n", 1, "category name"),
    ("\n\nbad\"glob phishing\n", 3, "host glob"),
])
def test_bad_blocked_list_lines_name_file_and_line(tmp_path, text, line, expected):
    (tmp_path / "blocked.txt").write_text(text)
    with pytest.raises(ConfigError) as raised:
        validate_component("url", str(tmp_path))
    assert raised.value.file == str(tmp_path / "blocked.txt") and raised.value.line == line
    assert expected in str(raised.value)


def test_the_shipped_seed_list_loads():
    from imss_milter.engines import component_dir
    validate_component("url", component_dir(None, "url"))
    assert len(load_blocked_dir(component_dir(None, "url"))) >= 1


def scan(engine, body: bytes, argument):
    raw = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html\r\n\r\n" + body + b"\r\n")
    model, scratch = parse_message(raw), {}
    return engine.check("url.reputation", argument, model, Envelope(), scratch), scratch


def test_engine_without_zones_answers_from_the_local_list(tmp_path):
    engine = build(options("    blocked: [\"*.bad.test\"]\n"), settings(tmp_path))
    findings, scratch = scan(engine, b'<a href="http://user@www.bad.test/x">x</a> http://fine.test/', ())
    [finding] = findings
    assert finding == {"detail": "http://www.bad.test/x is on the local blocked list (*.bad.test: blocked)",
                       "name": "blocked", "category": "blocked", "url": "http://www.bad.test/x",
                       "domain": "www.bad.test", "part": ["text/html"]}
    assert scratch["url.findings"] == [{"url": "http://www.bad.test/x", "domain": "www.bad.test",
                                        "zone": "blocked", "category": "blocked",
                                        "detail": finding["detail"]}]
    assert scan(engine, b"http://www.bad.test/", ("phishing",))[0] == []


def test_mismatch_is_reported_only_when_asked_for(tmp_path):
    engine = build(options("    max_urls: 5\n"), settings(tmp_path))
    body = b'<a href="http://evil.test/">https://www.paypal.com/</a>'
    assert scan(engine, body, ())[0] == []               # `true` means listings, not every tracking link
    [finding] = scan(engine, body, ("mismatch",))[0]
    assert finding["category"] == "mismatch"
    assert finding["detail"] == "link text shows www.paypal.com but the link opens evil.test"


def test_config_blocked_globs_add_to_the_pattern_files(tmp_path):
    url_dir = tmp_path / "patterns" / "current" / "url"
    url_dir.mkdir(parents=True)
    (url_dir / "blocked.txt").write_text("from-file.test malware\n")
    engine = build(options("    blocked: [from-config.test]\n"), settings(tmp_path))
    assert [f["category"] for f in scan(engine, b"http://from-file.test/ http://from-config.test/", ())[0]] == [
        "malware", "blocked"]


def test_bad_pattern_file_stops_the_build(tmp_path):
    url_dir = tmp_path / "patterns" / "current" / "url"
    url_dir.mkdir(parents=True)
    (url_dir / "blocked.txt").write_text("a b c\n")
    with pytest.raises(ConfigError, match="blocked.txt:1"):
        build(options("    max_urls: 5\n"), settings(tmp_path))


def test_blocked_list_add_refuses_junk():
    with pytest.raises(ValueError):
        BlockedList().add("")


# ---------------------------------------------------------------- url.reputation categories in rules

def rules_with(when: str, enabled: str = "true"):
    return compile_rules([("/r/50-url.yaml",
                           "policies:\n"
                           "  - name: p\n"
                           f"    enabled: {enabled}\n"
                           "    route: {to: ['*@example.com']}\n"
                           f"    when: {{url.reputation: {when}}}\n"
                           "    actions: [reject]\n")], engines=["url"])


def test_an_empty_category_list_is_refused_saying_what_is_expected():
    with pytest.raises(ConfigError) as raised:
        rules_with("[]")
    assert "50-url.yaml:5: " in str(raised.value)
    assert "url.reputation: expected true or a non-empty list of categories, got an empty list" in str(raised.value)


def categorising_engine(tmp_path):
    url_dir = tmp_path / "patterns" / "current" / "url"
    url_dir.mkdir(parents=True)
    (url_dir / "blocked.txt").write_text("*.fraud.test fraud\nshop.test/kit* kit-malware\n")
    return build(options(
        "    blocked: [\"*.bad.test\"]\n"
        "    zones:\n"
        "      - {zone: uribl.example.test, codes: {\"127.0.1.2\": spam, \"127.0.1.4\": phishing}}\n"
        "      - {zone: surbl.example.test, bitmask: {16: malware}}\n"
        "      - {zone: plain.example.test}\n"), settings(tmp_path))


def test_the_engine_names_every_category_it_can_produce(tmp_path):
    assert categorising_engine(tmp_path).categories() == {
        "spam", "phishing", "malware", "plain.example.test", "fraud", "kit-malware", "blocked", "mismatch"}


def test_a_category_nothing_produces_is_a_warning_naming_policy_file_and_line(tmp_path):
    engine = categorising_engine(tmp_path)
    rules = rules_with("[phising, malware, fraud, mismatch, blocked, plain.example.test]")
    [warning] = engine_condition_warnings(rules.policies, {"url": engine})
    assert warning.startswith("/r/50-url.yaml:2: policy 'p': url.reputation category 'phising' is produced by no")
    assert "known: blocked, fraud, kit-malware, malware, mismatch, phishing" in warning
    assert engine_condition_warnings(rules_with("true").policies, {"url": engine}) == []
    # a disabled policy asks nothing of the engine
    assert engine_condition_warnings(rules_with("[phising]", enabled="false").policies, {"url": engine}) == []


def test_rules_naming_categories_compile_without_a_url_engine():
    rules = compile_rules([("/r/50-url.yaml", "policies:\n  - name: p\n    when: {url.reputation: [phising]}\n"
                                              "    actions: [reject]\n")], engines=[])
    assert any("no url engine is configured" in warning for warning in rules.warnings)
    assert engine_condition_warnings(rules.policies, {}) == []
