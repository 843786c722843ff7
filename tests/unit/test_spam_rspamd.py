"""The rspamd backend's pure parts: its JSON answers, request headers and URL checking."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from imss_milter.engines import EngineOptions, spam
from imss_milter.engines.spam.rspamd import RspamdError, parse_answer, parse_url, request_headers
from imss_milter.errors import ConfigError
from imss_milter.mime.model import Limits
from imss_milter.policy.types import Envelope
from imss_milter.yamlconf import loads_yaml

# the shape of a /checkv2 answer as rspamd 3.x sends it
ANSWER = b"""{"is_skipped":false,"score":7.35,"required_score":15.0,"action":"add header",
 "symbols":{"R_SPF_FAIL":{"name":"R_SPF_FAIL","score":1.0,"metric_score":1.0,"description":"SPF fail",
   "options":["-all"]},
  "BAYES_SPAM":{"name":"BAYES_SPAM","score":6.35,"metric_score":5.1,"description":"Bayes says spam"},
  "ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0}},
 "messages":{},"message-id":"1@example","time_real":0.01}"""


def test_answer_gives_score_symbols_and_action():
    result = parse_answer(ANSWER)
    assert result.score == 7.35
    assert [(hit.name, hit.score) for hit in result.hits] == [("BAYES_SPAM", 6.35), ("R_SPF_FAIL", 1.0),
                                                              ("ARC_NA", 0.0)]
    assert result.hits[0].description == "Bayes says spam"
    assert result.extra == {"action": "add header", "required_score": 15.0}


@pytest.mark.parametrize("body, words", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"error": "cannot parse message"}', "refused"),
    (b'{"action": "no action"}', "no numeric score"),
    (b'{"score": "high"}', "no numeric score"),
])
def test_answers_that_are_not_rspamd_results_raise(body, words):
    with pytest.raises(RspamdError, match=words):
        parse_answer(body)


def test_odd_symbols_are_tolerated():
    result = parse_answer(b'{"score": 2, "symbols": {"A": "?", "B": {"score": null}}}')
    assert result.score == 2 and {hit.name: hit.score for hit in result.hits} == {"A": 0.0, "B": 0.0}


def test_request_headers_carry_the_envelope_on_one_line_each():
    envelope = Envelope(sender="a@b.example", recipients=["x@example.com", "y@example.com"],
                        client_ip="[IPv6:2001:db8::1]", helo="evil\r\nInjected: yes", queue_id="Q1")
    headers = request_headers(envelope)
    assert ("IP", "2001:db8::1") in headers and ("From", "a@b.example") in headers
    assert [value for name, value in headers if name == "Rcpt"] == ["x@example.com", "y@example.com"]
    assert ("Queue-Id", "Q1") in headers
    assert all("\n" not in value and "\r" not in value for _, value in headers)
    assert ("From", "<>") in request_headers(Envelope(sender=""))


def test_urls():
    assert parse_url("http://127.0.0.1:11333") == ("127.0.0.1", 11333, "")
    assert parse_url("http://localhost/rspamd/") == ("localhost", 11333, "/rspamd")
    for bad in ("https://127.0.0.1:11333", "127.0.0.1:11333", "http://:80", "http://h:99999"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_bad_rspamd_section_names_the_key():
    section = loads_yaml("backend: rspamd\nurl: 'tcp://127.0.0.1'\n", "imss-milter.yaml")
    with pytest.raises(ConfigError) as caught:
        spam.build(EngineOptions(name="spam", backend="rspamd", section=section),
                   SimpleNamespace(patterns_dir=None, limits=Limits()))
    assert caught.value.line == 2 and "url" in str(caught.value)
