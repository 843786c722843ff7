"""DLP incidents are masked everywhere: `scan --json`, the milter's tracking record, quarantine metadata, logs."""

from __future__ import annotations

import json
import logging
import subprocess
from email.message import EmailMessage

import pytest

from imss_milter import cli
from imss_milter.milter import ImssMilter
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from tests.helpers.daemon import imss_command
from tests.helpers.milterctx import run_message
from tests.helpers.runtime import write_config

CARDS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011 1111 1111 1117",
         "3530111333300000"]
RULES = """\
policies:
  - name: outbound-pci
    route: {from: internal, to: "!internal"}
    when: {dlp: [pci-dss]}
    actions: [{quarantine: {area: dlp}}]
"""


def forms(card: str) -> set[str]:
    """Every way the full number could be written out."""
    digits = "".join(c for c in card if c.isdigit())
    return {card, digits, " ".join(digits[i:i + 4] for i in range(0, len(digits), 4)),
            "-".join(digits[i:i + 4] for i in range(0, len(digits), 4))}


def assert_no_full_number(text: str) -> None:
    for card in CARDS:
        for form in forms(card):
            assert form not in text, f"full card number {form} shown"


def card_message(subject: str = "payment list") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@partner.test"
    msg["Subject"] = subject
    msg.set_content("Please charge these:\n" + "\n".join(CARDS) + "\n")
    return msg.as_bytes()


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path, {"50-dlp.yaml": RULES})


def test_scan_json_shows_masked_values_only(config, tmp_path):
    eml = tmp_path / "cards.eml"
    eml.write_bytes(card_message())
    done = subprocess.run([*imss_command(), "--config", config, "scan", "--json", str(eml)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "quarantine" and report["rules"] == ["outbound-pci"]
    [finding] = [f for f in report["findings"] if f.get("template") == "pci-dss"]
    assert finding["identifiers"] == {"credit-card": 5}
    assert finding["values"]["credit-card"][0] == "4111********1111"
    assert_no_full_number(done.stdout + done.stderr)


def test_milter_tracking_record_quarantine_metadata_and_logs_are_masked(config, capsys, caplog):
    runtime = Runtime(load_settings(config))
    previous = ImssMilter.runtime
    ImssMilter.runtime = runtime
    try:
        with caplog.at_level(logging.DEBUG, logger="imss_milter"):
            outcome = run_message(card_message(), sender="alice@example.com", recipients=("bob@partner.test",),
                                  queue_id="QDLP1")
    finally:
        ImssMilter.runtime = previous
    assert outcome.result == "discard"
    [record] = runtime.store.query_logs(kind="messages", queue_id="QDLP1")
    assert record["verdict"] == "quarantine"
    [finding] = [f for f in record["findings"] if f.get("template") == "pci-dss"]
    assert finding["values"]["credit-card"] == ["4111********1111", "5555********4444", "3782*******0005",
                                                "6011********1117", "3530********0000"]
    assert_no_full_number(json.dumps(record))
    assert_no_full_number(caplog.text)

    [held] = runtime.store.list()
    assert held["area"] == "dlp"
    assert cli.main(["--config", config, "quarantine", "show", held["id"], "--json"]) == 0
    assert cli.main(["--config", config, "logs", "--json"]) == 0
    shown = capsys.readouterr()
    assert held["id"] in shown.out and "4111********1111" in shown.out
    assert_no_full_number(shown.out + shown.err)
    # the held message itself is intact: release must deliver what was sent
    assert b"4111 1111 1111 1111" in runtime.store.read_raw(held["id"])
