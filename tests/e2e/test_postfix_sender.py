"""End to end: sender filtering under a real Postfix, with rbldnsd serving the DNSBL zones on loopback.

Clients connect from other loopback addresses (127.0.0.x, bound with
source_address) so each scenario is a different client IP: a DNSBL-listed
client is refused at connect, a harvesting client is blocked by the IP
Profiler and let in again by `imss-milter sender unblock`, and a `tag` zone
feeds the `sender.reputation` rule condition.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import socket
import time
import uuid
from email.message import EmailMessage

import pytest

from tests.helpers.daemon import MilterDaemon
from tests.helpers.postfix import PostfixInstance
from tests.helpers.rbldnsd import Rbldnsd
from tests.helpers.stack import e2e_root, mail_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("rbldnsd") is None and not os.path.exists("/usr/sbin/rbldnsd"),
                       reason="rbldnsd is not installed (apt-get install rbldnsd)"),
]

LISTED_IP = "127.0.0.2"       # every DNSBL lists 127.0.0.2 as its test entry
HARVESTER_IP = "127.0.0.3"
TAGGED_IP = "127.0.0.4"
CLEAN_IP = "127.0.0.1"

ZONES = {
    "bl.imss-e2e.test": ("ip4set", f"{LISTED_IP} :127.0.0.2:spam source\n"),
    "dyn.imss-e2e.test": ("ip4set", f"{TAGGED_IP} :127.0.0.10:dynamic address\n"),
}

RECIPIENTS = "bob@example.com\ncarol@example.com\n# a comment line\n"

TAG_RULE = """\
policies:
  - name: tag-dynamic-clients
    route: {from: any, to: any}
    when: {sender.reputation: [dynamic]}
    actions:
      - add_header: {name: X-IMSS-Reputation, value: dynamic-client}
"""


def sender_config(dns_port: int, recipients_file: str) -> str:
    return f"""\
dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 3s}}
sender_filtering:
  reputation:
    zones:
      - zone: bl.imss-e2e.test
        codes: {{"127.0.0.2": spam-source}}
        action: reject
      - zone: dyn.imss-e2e.test
        codes: {{"127.0.0.10-11": dynamic}}
        action: tag
  directory:
    files: [{recipients_file}]
  ip_profiler:
    dha: {{threshold: 3, window: 10m, block: 1h, action: reject}}
"""


@pytest.fixture(scope="module")
def stack():
    root = e2e_root("imss-e2e-sender-")
    dns = Rbldnsd(ZONES, ttl=300).start()
    recipients_file = os.path.join(root, "recipients.txt")
    with open(recipients_file, "w") as handle:
        handle.write(RECIPIENTS)
    try:
        with mail_stack(root, lambda postfix: MilterDaemon(
                root, rules={"50-reputation.yaml": TAG_RULE}, release_port=postfix.reinject_port,
                extra_config=sender_config(dns.port, recipients_file))) as (sink, postfix, daemon):
            yield sink, postfix, daemon, dns
    finally:
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)


def make_message(subject: str, to: str = "bob@example.com") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
    msg.set_content("Hello.\n")
    return msg.as_bytes()


def connect(postfix: PostfixInstance, source_ip: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60, source_address=(source_ip, 0))


def send_from(postfix: PostfixInstance, source_ip: str, raw: bytes, rcpts=("bob@example.com",)):
    with connect(postfix, source_ip) as client:
        return client.sendmail("alice@example.org", list(rcpts), raw)


def refusal_at_connect(postfix: PostfixInstance, source_ip: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """The greeting and the MAIL FROM reply a client from source_ip sees.

    When a milter refuses at connect, Postfix greets with "554 ... not
    accepting connections" but keeps the session open and gives the milter's
    own reply (code and text) to MAIL FROM, so the client learns why.
    smtplib closes the connection on a non-220 greeting; read it by hand.
    """
    client = smtplib.SMTP(timeout=60)
    client.sock = socket.create_connection(("127.0.0.1", postfix.smtp_port), timeout=60,
                                           source_address=(source_ip, 0))
    try:
        greeting = client.getreply()
        client.ehlo()
        mail = client.mail("alice@example.org")
        client.quit()
    finally:
        client.close()
    return greeting, mail


def assert_refused_at_connect(postfix: PostfixInstance, source_ip: str, *expected_texts: bytes) -> None:
    (greeting_code, greeting), (code, reply) = refusal_at_connect(postfix, source_ip)
    assert greeting_code == 554, greeting
    assert b"not accepting connections" in greeting, greeting
    assert code == 554, reply
    assert b"5.7.1" in reply, reply
    for text in expected_texts:
        assert text in reply, reply


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_dnsbl_listed_client_is_refused_at_connect_and_a_clean_one_delivers(stack):
    sink, postfix, daemon, dns = stack
    assert_refused_at_connect(postfix, LISTED_IP, b"client listed by bl.imss-e2e.test")
    # Postfix itself reports the milter's refusal at the CONNECT stage
    assert wait_for(lambda: f"milter-reject: CONNECT from unknown[{LISTED_IP}]: 554 5.7.1" in postfix.log())
    assert wait_for(lambda: f"[{LISTED_IP}] refused: dnsbl:bl.imss-e2e.test" in daemon.log())

    send_from(postfix, CLEAN_IP, make_message("clean e2e-clean-client"))
    [captured] = sink.wait_for(1, subject_contains="e2e-clean-client")
    assert captured.recipients == ["bob@example.com"]
    assert captured.message["X-IMSS-Reputation"] is None
    # the listing was really looked up in our rbldnsd (reversed octets under the zone)
    assert dns.queries_for("2.0.0.127.bl.imss-e2e.test") >= 1


def test_directory_harvest_blocks_the_client_until_unblocked(stack):
    sink, postfix, daemon, _ = stack
    with connect(postfix, HARVESTER_IP) as client:
        client.ehlo()
        code, reply = client.mail("probe@harvest.test")
        assert code == 250, reply
        for number in range(3):
            code, reply = client.rcpt(f"nobody{number}@example.com")
            assert code == 550, reply
            assert b"5.1.1" in reply and b"User unknown" in reply, reply
        # the threshold was reached during this session: later probes get the block reply
        code, reply = client.rcpt("bob@example.com")
        assert code == 554, reply
        assert b"IP Profiler (dha)" in reply, reply

    assert_refused_at_connect(postfix, HARVESTER_IP, b"IP Profiler (dha)")
    assert wait_for(lambda: f"milter-reject: CONNECT from unknown[{HARVESTER_IP}]" in postfix.log())

    listing = daemon.cli("sender", "blocked", "--json", check=True)
    blocks = json.loads(listing.stdout)
    [block] = [b for b in blocks if b["ip"] == HARVESTER_IP]
    assert {"ip", "reason", "since", "until"} <= set(block)
    assert block["kind"] == "dha"
    # the clean client of the other test was never counted or blocked
    assert CLEAN_IP not in [b["ip"] for b in blocks]

    result = daemon.cli("sender", "unblock", HARVESTER_IP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert HARVESTER_IP not in [b["ip"] for b in json.loads(daemon.cli("sender", "blocked", "--json",
                                                                        check=True).stdout)]
    refused = send_from(postfix, HARVESTER_IP, make_message("after unblock e2e-unblocked"))
    assert refused == {}
    [captured] = sink.wait_for(1, subject_contains="e2e-unblocked")
    assert captured.recipients == ["bob@example.com"]

    result = daemon.cli("sender", "unblock", HARVESTER_IP)
    assert result.returncode != 0, "unblocking an IP that is not blocked says so"


def test_tag_zone_lets_the_client_in_and_rules_see_its_reputation(stack):
    sink, postfix, _, _ = stack
    send_from(postfix, TAGGED_IP, make_message("from a dynamic address e2e-tagged"))
    found = sink.wait_for(1, subject_contains="e2e-tagged")
    assert found, f"not delivered; milter log:\n{stack[2].log()[-3000:]}"
    [captured] = found
    assert captured.message["X-IMSS-Reputation"] == "dynamic-client", stack[2].log()[-3000:]

    # same rule, clean client: no header
    send_from(postfix, CLEAN_IP, make_message("from a clean address e2e-untagged"))
    [captured] = sink.wait_for(1, subject_contains="e2e-untagged")
    assert captured.message["X-IMSS-Reputation"] is None
