"""url.reputation through the milter: a real rbldnsd on loopback, rules quarantine phishing links,
and a dead blocklist is answered per the engine's on_error."""

import os
import shutil
from email.message import EmailMessage

import pytest

from imss_milter.milter import ImssMilter
from tests.helpers.milterctx import run_message
from tests.helpers.rbldnsd import BlackholeDns, Rbldnsd
from tests.helpers.runtime import runtime_for

pytestmark = pytest.mark.skipif(shutil.which("rbldnsd") is None and not os.path.exists("/usr/sbin/rbldnsd"),
                                reason="rbldnsd is not installed (apt-get install rbldnsd)")

RULES = """\
policies:
  - name: phishing-links
    route: {from: any, to: any}
    when: {url.reputation: [phishing]}
    actions: [{quarantine: {area: phishing}}]
  - name: spam-links
    route: {from: any, to: any}
    when: {url.reputation: [spam]}
    actions: [{add_header: {name: X-URL-Spam, value: listed}}]
"""


@pytest.fixture(scope="module")
def rbldnsd():
    server = Rbldnsd({"uribl.example.test": ("dnset", "phish.test :127.0.1.4:phishing\n"
                                                      "spammy.test :127.0.1.2:spam\n")}).start()
    yield server
    server.stop()


def make_runtime(tmp_path, port, on_error="tempfail", timeout="2s"):
    return runtime_for(tmp_path, {"10-url.yaml": RULES}, f"""\
        patterns_dir: {tmp_path / 'patterns'}
        dns: {{nameservers: ["127.0.0.1"], port: {port}, timeout: {timeout}}}
        engines:
          url:
            on_error: {on_error}
            zones:
              - {{zone: uribl.example.test, type: domain, codes: {{"127.0.1.2": spam, "127.0.1.4": phishing}}}}
        """)


@pytest.fixture
def use_runtime():
    previous = ImssMilter.runtime

    def install(runtime):
        ImssMilter.runtime = runtime
        return runtime
    yield install
    ImssMilter.runtime = previous


def html_message(href: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bank@example.org"
    msg["To"] = "user@example.com"
    msg["Subject"] = "Verify your account"
    msg.set_content("Please verify.\n")
    msg.add_alternative(f'<p>Please <a href="{href}">verify your account</a>.</p>\n', subtype="html")
    return msg.as_bytes()


def test_phishing_link_is_quarantined(tmp_path, rbldnsd, use_runtime):
    runtime = use_runtime(make_runtime(tmp_path, rbldnsd.port))
    outcome = run_message(html_message("http://paypal.com@secure.phish.test/login"), queue_id="QURL1")
    assert outcome.result == "discard"
    [held] = runtime.store.list()
    assert held["area"] == "phishing" and held["rules"] == ["phishing-links"]
    [record] = runtime.store.query_logs(kind="messages", queue_id="QURL1")
    assert record["verdict"] == "quarantine"


def test_spam_link_is_delivered_with_the_rule_header(tmp_path, rbldnsd, use_runtime):
    runtime = use_runtime(make_runtime(tmp_path, rbldnsd.port))
    outcome = run_message(html_message("https://www.spammy.test/offer"))
    assert outcome.result == "continue"
    assert ("X-URL-Spam", " listed") in outcome.added_headers
    assert runtime.store.list() == []


def test_clean_link_is_delivered_unchanged(tmp_path, rbldnsd, use_runtime):
    runtime = use_runtime(make_runtime(tmp_path, rbldnsd.port))
    outcome = run_message(html_message("https://www.clean.test/"))
    assert outcome.result == "continue" and outcome.added_headers == []
    assert runtime.store.list() == []


def test_dead_blocklist_tempfails_by_default_and_delivers_with_on_error_accept(tmp_path, use_runtime):
    with BlackholeDns() as dead:
        use_runtime(make_runtime(tmp_path, dead.port, timeout="0.3s"))
        assert run_message(html_message("http://phish.test/")).result == "tempfail"
        use_runtime(make_runtime(tmp_path, dead.port, on_error="accept", timeout="0.3s"))
        assert run_message(html_message("http://phish.test/")).result == "continue"
        assert dead.received >= 2
