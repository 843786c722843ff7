"""End to end: outbound card numbers under a real Postfix are quarantined by a DLP template; near misses pass;
what the administrator's tools show is masked."""

from __future__ import annotations

import json
import smtplib
import uuid
from email.message import EmailMessage

import pytest

from tests.helpers.daemon import MilterDaemon
from tests.helpers.postfix import PostfixInstance
from tests.helpers.stack import e2e_root, mail_stack

pytestmark = pytest.mark.e2e

DLP_RULES = """\
dlp:
  identifiers:
    cvv-words: {type: keywords, items: [cvv, cvc, "security code"]}
  templates:
    cards-bulk:
      any:
        - {identifier: credit-card, min_count: 5}
        - all: [{identifier: credit-card}, {identifier: cvv-words, distance: 50}]
policies:
  - name: outbound-cards
    route: {from: internal, to: "!internal"}
    when: {dlp: [cards-bulk, pci-dss]}
    actions: [{quarantine: {area: dlp}}]
"""
CARDS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011 1111 1111 1117", "3530111333300000"]
# the same numbers with their last digit changed: every Luhn check fails
NEAR_MISSES = [card[:-1] + str((int(card[-1]) + 1) % 10) for card in CARDS]


def full_forms() -> set[str]:
    forms = set()
    for card in CARDS:
        digits = "".join(c for c in card if c.isdigit())
        forms |= {card, digits, " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))}
    return forms


def make_message(subject: str, numbers: list[str]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "buyer@partner.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.com>"
    msg.set_content("Card list for the quarter:\n" + "\n".join(numbers) + "\n")
    return msg.as_bytes()


@pytest.fixture(scope="module")
def stack():
    root = e2e_root("imss-e2e-dlp-")
    with mail_stack(root, lambda postfix: MilterDaemon(root, rules={"50-dlp.yaml": DLP_RULES},
                                                       release_port=postfix.reinject_port)) as parts:
        yield parts


def send(postfix: PostfixInstance, raw: bytes, sender: str = "alice@example.com", rcpt: str = "buyer@partner.test"):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        return client.sendmail(sender, [rcpt], raw)


def test_outbound_card_numbers_are_quarantined_and_shown_masked(stack):
    sink, postfix, daemon = stack
    send(postfix, make_message("quarterly e2e-dlp-cards", CARDS))
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-dlp-cards") == []

    listing = json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)
    [entry] = [e for e in listing if "e2e-dlp-cards" in e["subject"]]
    assert entry["area"] == "dlp" and entry["rules"] == ["outbound-cards"]
    shown = daemon.cli("quarantine", "show", entry["id"], "--json", check=True).stdout
    assert json.loads(shown)["id"] == entry["id"]

    logs_out = daemon.cli("logs", "--json", check=True).stdout
    [record] = [r for r in json.loads(logs_out) if "e2e-dlp-cards" in (r.get("subject") or "")]
    assert record["verdict"] == "quarantine" and record["queue_id"]
    findings = [f for f in record["findings"] if f.get("template") == "cards-bulk"]
    assert findings and findings[0]["identifiers"] == {"credit-card": 5}
    assert findings[0]["values"]["credit-card"][0] == "4111********1111"
    for text in (shown, logs_out, daemon.log()):
        for form in full_forms():
            assert form not in text


def test_near_miss_numbers_are_delivered(stack):
    sink, postfix, _ = stack
    send(postfix, make_message("quarterly e2e-dlp-nearmiss", NEAR_MISSES))
    [captured] = sink.wait_for(1, subject_contains="e2e-dlp-nearmiss")
    assert captured.recipients == ["buyer@partner.test"]
    assert NEAR_MISSES[0].encode() in captured.raw


def test_the_same_cards_between_internal_users_are_delivered(stack):
    sink, postfix, _ = stack
    send(postfix, make_message("internal e2e-dlp-internal", CARDS), rcpt="bob@example.com")
    [captured] = sink.wait_for(1, subject_contains="e2e-dlp-internal")
    assert captured.recipients == ["bob@example.com"]
