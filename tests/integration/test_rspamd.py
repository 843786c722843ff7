"""The rspamd backend against a real rspamd (Debian's package) started on loopback by the test.

rspamd runs in the foreground with a minimal config: one normal worker on
127.0.0.1, no redis, DNS pointed at a loopback port where nothing answers
(so no lookup ever leaves the machine), and a small Lua rule set whose
symbols prove what reached rspamd. GTUBE is rspamd's own built-in check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from types import SimpleNamespace

import pytest

from imss_milter.engines import EngineOptions
from imss_milter.engines import spam
from imss_milter.engines.spam.rspamd import RspamdError
from imss_milter.mime import parse_message
from imss_milter.mime.model import Limits
from imss_milter.policy.types import Envelope, Modification
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.net import free_port, stop_process, wait_for_port

pytestmark = pytest.mark.skipif(shutil.which("rspamd") is None, reason="rspamd is not installed (apt-get install rspamd)")

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

LUA_RULES = """\
rspamd_config.IMSS_TEST_WORD = {
  callback = function(task)
    return string.find(tostring(task:get_content()), 'imss-rspamd-test-word', 1, true) ~= nil
  end,
  score = 4.5,
  description = 'imss test word in the message',
}
-- fires only when every envelope fact the milter knows reached rspamd
rspamd_config.IMSS_ENVELOPE_SEEN = {
  callback = function(task)
    local from = task:get_from('smtp')
    local rcpts = task:get_recipients('smtp')
    return tostring(task:get_ip()) == '192.0.2.55'
      and from and from[1] and from[1].addr == 'envelope@sender.example'
      and rcpts and #rcpts == 2 and rcpts[2].addr == 'second@example.com'
      and task:get_helo() == 'mx.sender.example'
      and task:get_queue_id() == 'QID4242'
  end,
  score = 0.25,
  description = 'envelope headers received',
}
rspamd_config.IMSS_NICE_WORD = {
  callback = function(task)
    return string.find(tostring(task:get_content()), 'imss-trusted-word', 1, true) ~= nil
  end,
  score = -2.0,
  description = 'a word that lowers the score',
}
"""


def start_rspamd(directory, port):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.lua").write_text(LUA_RULES)
    (directory / "rspamd.conf").write_text(textwrap.dedent(f"""\
        options {{
          pidfile = "{directory}/rspamd.pid";
          dbdir = "{directory}";
          filters = "";
          dns {{ nameserver = ["127.0.0.1:{free_port()}"]; timeout = 0.2s; retransmits = 0; }}
        }}
        logging {{ type = "file"; filename = "{directory}/rspamd.log"; level = "info"; }}
        lua = "{directory}/rules.lua";
        actions {{ reject = 15; add_header = 6; greylist = 4; }}
        worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; task_timeout = 8s; }}
        """))
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen(["rspamd", "-f", "-i", "-u", user, "-g", group, "-c", str(directory / "rspamd.conf")],
                            stdout=open(directory / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "TMPDIR": str(directory)})
    try:
        wait_for_port(port, timeout=90, proc=proc)   # the first start compiles its URL and TLD tables
    except Exception:
        stop_process(proc)
        raise RuntimeError("rspamd did not start:\n" + (directory / "stdout.log").read_text()[-2000:]
                           + _tail(directory / "rspamd.log"))
    return proc


def _tail(path) -> str:
    return path.read_text()[-2000:] if path.exists() else ""


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rspamd")
    port = free_port()
    proc = start_rspamd(directory, port)
    server = SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, directory=directory, proc=proc)
    yield server
    stop_process(server.proc)


def make_engine(url, section=""):
    options = EngineOptions(name="spam", backend="rspamd", timeout=10.0,
                            section={"backend": "rspamd", "url": url, **(section or {})})
    return spam.build(options, SimpleNamespace(patterns_dir=None, limits=Limits()))


def message(body: str, subject="test") -> bytes:
    return (f"From: a@sender.example\r\nTo: user@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <1@sender.example>\r\n\r\n{body}\r\n").encode()


ENVELOPE = Envelope(sender="envelope@sender.example", recipients=["user@example.com", "second@example.com"],
                    client_ip="192.0.2.55", helo="mx.sender.example", client_name="mx.sender.example",
                    queue_id="QID4242")


def check(engine, raw, argument=("level", "medium"), envelope=ENVELOPE):
    scratch = {"message.raw": raw}
    model = parse_message(raw)
    engine.prepare(model, envelope, scratch)
    return engine.check("spam", argument, model, envelope, scratch), scratch["spam.result"]


def test_gtube_is_spam_at_every_level(rspamd):
    engine = make_engine(rspamd.url)
    for level in ("low", "medium", "high"):
        findings, result = check(engine, message(f"test\r\n{GTUBE}"), ("level", level))
        assert findings, level
    assert "GTUBE" in [hit.name for hit in result.hits]
    assert result.score >= 8 and result.extra["action"] == "reject"


def test_rspamd_symbols_and_score_become_the_result(rspamd):
    engine = make_engine(rspamd.url)
    findings, result = check(engine, message("hello imss-rspamd-test-word"), ("level", "high"))
    assert result.score == pytest.approx(4.75)
    names = {hit.name: hit for hit in result.hits}
    assert names["IMSS_TEST_WORD"].score == 4.5
    assert names["IMSS_TEST_WORD"].description == "imss test word in the message"
    assert findings and "IMSS_TEST_WORD(4.5)" in findings[0]["detail"]
    assert check(engine, message("hello imss-rspamd-test-word"), ("level", "medium"))[0] == []


def test_envelope_reaches_rspamd_as_request_headers(rspamd):
    engine = make_engine(rspamd.url)
    _, result = check(engine, message("plain text"))
    assert [hit.name for hit in result.hits] == ["IMSS_ENVELOPE_SEEN"]
    _, result = check(engine, message("plain text"), envelope=Envelope(sender="other@x.example",
                                                                          recipients=["user@example.com"]))
    assert "IMSS_ENVELOPE_SEEN" not in [hit.name for hit in result.hits]


def test_negative_rspamd_scores_and_score_comparisons(rspamd):
    engine = make_engine(rspamd.url)
    findings, result = check(engine, message("imss-trusted-word"), ("score", "<", 0))
    assert result.score == pytest.approx(-1.75) and findings


def test_shared_layer_applies_to_rspamd_and_header_is_written(rspamd):
    engine = make_engine(rspamd.url, {"score_header": "X-IMSS-Spam-Score", "exemptions": ["bluebird"],
                                      "reputation_scores": {"spam-source": 3}})
    raw = message("hello imss-rspamd-test-word")
    envelope = Envelope(**{**ENVELOPE.__dict__, "reputation": ["spam-source"]})
    scratch = {"message.raw": raw}
    model = parse_message(raw)
    assert engine.check("spam", ("level", "medium"), model, envelope, scratch)   # 4.75 + 3 (DNSBL)
    assert engine.modifications(scratch) == [Modification(
        "add_header", ("X-IMSS-Spam-Score", "score=7.75 rules=IMSS_TEST_WORD,IMSS_ENVELOPE_SEEN,DNSBL:spam-source"))]
    findings, result = check(engine, message(f"bluebird {GTUBE}"))
    assert findings == [] and result.standing == "exempt"


def test_connection_close_answers_are_honoured_message_after_message(rspamd):
    # rspamd 3.4's normal worker answers "Connection: close": the client must not keep a dead socket
    engine = make_engine(rspamd.url)
    for index in range(5):
        _, result = check(engine, message(f"message {index} imss-rspamd-test-word"))
        assert result.score == pytest.approx(4.75)
        assert engine.client._local.connection is None


def test_rspamd_down_raises_and_a_restart_is_picked_up(tmp_path, rspamd):
    port = free_port()
    engine = make_engine(f"http://127.0.0.1:{port}")
    with pytest.raises(RspamdError, match=f"127.0.0.1:{port}"):
        check(engine, message("nobody listens"))
    proc = start_rspamd(tmp_path / "second", port)
    try:
        _, result = check(engine, message("imss-rspamd-test-word"))
        assert result.score == pytest.approx(4.75)
        # rspamd restarts while the engine holds a keep-alive connection: the next check reconnects
        stop_process(proc)
        proc = start_rspamd(tmp_path / "second", port)
        _, result = check(engine, message("imss-rspamd-test-word"))
        assert result.score == pytest.approx(4.75)
    finally:
        stop_process(proc)


def test_milter_rule_on_rspamd_score_with_on_error_accept(tmp_path, rspamd):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10-spam.yaml").write_text(textwrap.dedent("""\
        policies:
          - name: spam-tag
            route: {from: any, to: any}
            when: {spam: {level: medium}}
            actions: [{tag_subject: "[SPAM] "}]
        """))
    config = tmp_path / "imss-milter.yaml"
    down = free_port()
    config.write_text(textwrap.dedent(f"""\
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        state_dir: {tmp_path / 'state'}
        engines:
          spam: {{backend: rspamd, url: "{rspamd.url}", timeout: 10s}}
        """))
    runtime = Runtime(load_settings(str(config)))
    runtime._store = False
    result = runtime.scan(message(GTUBE), ENVELOPE)
    assert result.verdict.rules == ["spam-tag"]
    assert Modification("tag_subject", ("[SPAM] ",)) in result.verdict.modifications
    assert runtime.scan(message("clean words"), ENVELOPE).verdict.rules == []
    # rspamd unreachable and on_error accept: the rule does not hold, mail flows
    config.write_text(config.read_text().replace(rspamd.url, f"http://127.0.0.1:{down}")
                      .replace("timeout: 10s}", "timeout: 10s, on_error: accept}"))
    runtime = Runtime(load_settings(str(config)))
    runtime._store = False
    assert runtime.scan(message(GTUBE), ENVELOPE).verdict.rules == []
