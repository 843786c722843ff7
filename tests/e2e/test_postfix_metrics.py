"""End to end: Prometheus metrics of a real daemon (master + workers) after known traffic through Postfix.

The scrape goes over HTTP to the master, which merges what every worker
wrote; the assertions compare counters before and after each batch of
mail, so they test exactly what the traffic changed.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import time
import urllib.request
import uuid
from email.message import EmailMessage

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.daemon import MilterDaemon
from tests.helpers.net import free_port

from tests.helpers.rbldnsd import Rbldnsd
from tests.helpers.stack import e2e_root, mail_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("rbldnsd") is None and not os.path.exists("/usr/sbin/rbldnsd"),
                       reason="rbldnsd is not installed (apt-get install rbldnsd)"),
]

LISTED_IP = "127.0.0.2"
CLEAN_IP = "127.0.0.1"
ZONE = "bl.imss-metrics.test"
SUBJECT_MARKERS = ("metrics-clean", "metrics-tag", "metrics-reject", "metrics-hold", "metrics-conn")

RULES = """\
policies:
  - name: reject-keyword
    route: {from: any, to: any}
    when: {subject: {keywords: ["metrics-reject"]}}
    actions: [reject]
  - name: tag-offers
    route: {from: any, to: internal}
    when: {body: {keywords: ["special offer"]}}
    actions: [{tag_subject: "[OFFER] "}]
  - name: hold-keyword
    route: {from: any, to: any}
    when: {subject: {keywords: ["metrics-hold"]}}
    actions: [{quarantine: {area: held}}]
  - name: no-secrets
    route: {from: any, to: any}
    when: {dlp: [secrets]}
    actions: [reject]
"""


@pytest.fixture(scope="module")
def stack():
    root = e2e_root("imss-e2e-metrics-")
    dns = Rbldnsd({ZONE: ("ip4set", f"{LISTED_IP} :127.0.0.2:listed\n")}, ttl=300).start()
    listen = f"127.0.0.1:{free_port()}"
    extra = f"""\
dns: {{nameservers: ["127.0.0.1"], port: {dns.port}, timeout: 3s}}
sender_filtering:
  reputation:
    zones:
      - {{zone: {ZONE}, codes: {{"127.0.0.2": spam-source}}, action: reject}}
"""
    try:
        with mail_stack(root, lambda postfix: MilterDaemon(
                root, rules={"50-metrics.yaml": RULES}, release_port=postfix.reinject_port,
                extra_config=extra, metrics_listen=listen)) as (sink, postfix, daemon):
            yield sink, postfix, daemon, listen
    finally:
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)


def scrape(listen: str) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_value(listen: str, name: str, expected: float, timeout: float = 15.0, **labels) -> dict:
    """Scrape until name{labels} reaches expected (tracking records and counter syncs are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(listen)
        if value(samples, name, **labels) >= expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def message(subject: str, body: str = "Hello.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
    msg.set_content(body)
    return msg.as_bytes()


def send(postfix, raw: bytes, source_ip: str = CLEAN_IP):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60, source_address=(source_ip, 0)) as client:
        return client.sendmail("alice@example.org", ["bob@example.com"], raw)


def test_counters_follow_known_traffic(stack):
    sink, postfix, daemon, listen = stack
    before = scrape(listen)
    for index in range(3):
        send(postfix, message(f"plain {index} metrics-clean"))
    send(postfix, message("news metrics-tag", body="A special offer inside.\n"))
    with pytest.raises(smtplib.SMTPDataError):
        send(postfix, message("please metrics-reject"))
    send(postfix, message("please metrics-hold"))
    sink.wait_for(4, subject_contains="metrics-")

    deliver_before = value(before, "imss_messages_total", verdict="deliver", direction="inbound")
    after = wait_for_value(listen, "imss_messages_total", deliver_before + 4, verdict="deliver", direction="inbound")
    assert value(after, "imss_messages_total", verdict="deliver", direction="inbound") == deliver_before + 4
    for verdict in ("reject", "quarantine"):
        # workers batch their samples (a flush every 0.2 s each): the message judged by the other
        # worker may show a flush later than the deliveries waited for above
        expected = value(before, "imss_messages_total", verdict=verdict, direction="inbound") + 1
        after = wait_for_value(listen, "imss_messages_total", expected, verdict=verdict, direction="inbound")
        assert value(after, "imss_messages_total", verdict=verdict, direction="inbound") == expected
    for rule in ("tag-offers", "reject-keyword", "hold-keyword"):
        assert value(after, "imss_rule_hits_total", rule=rule) == value(before, "imss_rule_hits_total", rule=rule) + 1

    # one histogram observation per stage per judged message (6 messages); every message asks
    # the DLP engine (no-secrets), which is a stage of its own
    for stage in ("parse", "policy", "dlp"):
        assert value(after, "imss_scan_seconds_count", stage=stage) == \
            value(before, "imss_scan_seconds_count", stage=stage) + 6
        assert value(after, "imss_scan_seconds_bucket", stage=stage, le="+Inf") == \
            value(after, "imss_scan_seconds_count", stage=stage)
        assert value(after, "imss_scan_seconds_sum", stage=stage) > 0

    # the quarantine gauge is counted in the store when scraped
    assert value(after, "imss_engine_errors_total", engine="dlp") == 0
    assert value(after, "imss_quarantine_messages", area="held") == 1
    assert value(after, "imss_messages_in_flight") == 0


def test_connections_and_dns_lookups_by_result(stack):
    _, postfix, _, listen = stack
    before = scrape(listen)
    # a listed client: refused at connect (Postfix answers MAIL FROM with the milter's reply)
    client = smtplib.SMTP(timeout=60)
    client.sock = socket.create_connection(("127.0.0.1", postfix.smtp_port), timeout=60,
                                           source_address=(LISTED_IP, 0))
    try:
        client.getreply()
        client.ehlo()
        code, _ = client.mail("alice@example.org")
        client.quit()
    finally:
        client.close()
    assert code == 554 or 500 <= code < 600
    send(postfix, message("clean client metrics-conn"))

    after = wait_for_value(listen, "imss_connections_total", value(before, "imss_connections_total", result="dnsbl") + 1,
                           result="dnsbl")
    assert value(after, "imss_connections_total", result="dnsbl") == \
        value(before, "imss_connections_total", result="dnsbl") + 1
    after = wait_for_value(listen, "imss_connections_total",
                           value(before, "imss_connections_total", result="accepted") + 1, result="accepted")
    assert value(after, "imss_connections_total", result="accepted") >= \
        value(before, "imss_connections_total", result="accepted") + 1
    lookups = sum(v for (name, labels), v in after.items()
                  if name == "imss_dns_lookups_total" and ("zone", ZONE) in labels)
    lookups_before = sum(v for (name, labels), v in before.items()
                         if name == "imss_dns_lookups_total" and ("zone", ZONE) in labels)
    assert lookups >= lookups_before + 2
    assert value(after, "imss_dns_lookups_total", zone=ZONE, result="listed") + \
        value(after, "imss_dns_lookups_total", zone=ZONE, result="cached") >= 1


def test_versions_and_labels_stay_bounded(stack):
    _, _, _, listen = stack
    samples = scrape(listen)
    components = {dict(labels)["component"] for (name, labels) in samples if name == "imss_pattern_version_info"}
    assert {"imss-milter", "rules", "antivirus", "spam", "url", "dlp"} <= components
    seed = {dict(labels)["version"] for (name, labels) in samples
            if name == "imss_pattern_version_info" and dict(labels)["component"] == "antivirus"}
    assert len(seed) == 1 and seed.pop().startswith("seed-"), "no update installed: the shipped seed set runs"
    for (name, labels) in samples:
        for label_value in dict(labels).values():
            assert "@" not in label_value, f"{name} carries an address in a label"
            assert not any(marker in label_value for marker in SUBJECT_MARKERS), \
                f"{name} carries a subject in a label"
            assert "alice" not in label_value and "127.0.0." not in label_value
