"""The verdict's findings are kept with a quarantined message (schema version 2) and shown by
`quarantine show`, DLP values masked: the full card number is nowhere but in the held message itself."""

from __future__ import annotations

import json
import os
import sqlite3

from imss_milter import cli
from imss_milter.milter import ImssMilter
from imss_milter.policy.types import Envelope
from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings
from imss_milter.store import Store
from imss_milter.store.sqlite import DB_NAME, MIGRATIONS, SCHEMA_VERSION
from tests.helpers.milterctx import run_message
from tests.unit.test_dlp_incidents import CARDS, assert_no_full_number, card_message, config, forms  # noqa: F401

RAW = b"From: a@example.com\r\nSubject: invoice\r\n\r\nhello\r\n"
MASKED = ["4111********1111", "5555********4444", "3782*******0005", "6011********1117", "3530********0000"]


def state_files(state_dir: str) -> dict[str, bytes]:
    """Every file the store wrote (database, its WAL, quarantine files), by path relative to state_dir."""
    found = {}
    for directory, _, names in os.walk(state_dir):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, state_dir)] = handle.read()
    return found


def test_findings_round_trip_and_older_rows_have_none(tmp_path):
    with Store(str(tmp_path)) as store:
        plain = store.quarantine("default", RAW, Envelope(sender="a@example.com", recipients=["b@x.test"]),
                                 "invoice", ["r"])
        findings = [{"condition": "dlp", "detail": "dlp template 'pci-dss': 1 credit-card in body",
                     "template": "pci-dss", "identifiers": {"credit-card": 1},
                     "values": {"credit-card": ["4111********1111"]}}]
        held = store.quarantine("dlp", RAW, Envelope(sender="a@example.com", recipients=["b@x.test"]),
                                "invoice", ["outbound-pci"], findings=findings)
        assert store.get(held)["findings"] == findings
        assert store.get(plain)["findings"] == []
        assert [r["findings"] for r in store.list(area="dlp")] == [findings]


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO held_message (id, kind, area, time, sender, recipients, subject, size, rules, reason,"
                 " path) VALUES ('20260101T000000-0123456789abcdef', 'quarantine', 'default', 1767225600,"
                 " 'a@example.com', '[\"b@x.test\"]', 'old', 3, '[]', '', 'quarantine/2026-01-01/x.eml')")
    conn.commit()
    conn.close()
    with Store(str(tmp_path)) as store:
        assert store.schema_version() == SCHEMA_VERSION >= 2
        [old] = store.list()
        assert old["subject"] == "old" and old["findings"] == []
        qid = store.quarantine("default", RAW, Envelope(sender="a@example.com"), "new", [],
                               findings=[{"detail": "x"}])
        assert store.get(qid)["findings"] == [{"detail": "x"}]


def test_milter_quarantine_keeps_masked_findings_and_show_prints_them(config, capsys):  # noqa: F811
    settings = load_settings(config)
    runtime = Runtime(settings)
    previous = ImssMilter.runtime
    ImssMilter.runtime = runtime
    try:
        outcome = run_message(card_message(), sender="alice@example.com", recipients=("bob@partner.test",),
                              queue_id="QFIND1")
    finally:
        ImssMilter.runtime = previous
    assert outcome.result == "discard"
    [held] = runtime.store.list()
    [finding] = [f for f in held["findings"] if f.get("template") == "pci-dss"]
    assert finding["condition"] == "dlp" and finding["where"] == "body"
    assert finding["identifiers"] == {"credit-card": 5}
    assert finding["values"]["credit-card"] == MASKED

    # the index row itself (not only the tracking log) holds the masked findings
    with sqlite3.connect(os.path.join(settings.state_dir, DB_NAME)) as conn:
        [(stored,)] = conn.execute("SELECT findings FROM held_message WHERE id = ?", (held["id"],)).fetchall()
    assert "4111********1111" in stored
    assert_no_full_number(stored)

    assert cli.main(["--config", config, "quarantine", "show", held["id"]]) == 0
    text = capsys.readouterr().out
    assert "findings:" in text and "dlp template 'pci-dss': 5 credit-card in body" in text
    assert "credit-card: " + ", ".join(MASKED) in text
    assert cli.main(["--config", config, "quarantine", "show", held["id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [f["values"] for f in shown["findings"] if f.get("template") == "pci-dss"] == [
        {"credit-card": MASKED}]
    assert_no_full_number(text + json.dumps(shown))

    runtime.store.close()
    files = state_files(settings.state_dir)
    eml = [path for path in files if path.startswith("quarantine" + os.sep)]
    # the held message is the only file beside the database: there is no .eml-side metadata to leak
    assert eml == [os.path.join("quarantine", held["time"][:10], held["id"] + ".eml")]
    assert b"4111 1111 1111 1111" in files[eml[0]]        # release must deliver what was sent
    everything_else = b"".join(data for path, data in files.items() if path not in eml)
    assert b"4111********1111" in everything_else
    for card in CARDS:
        for form in forms(card):
            assert form.encode() not in everything_else, f"full card number {form} stored"
