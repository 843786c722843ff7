"""Policy evaluation on real raw messages through the MIME parser (imss_milter.mime.parse_message)."""

import base64
import io
import zipfile

import pytest

from imss_milter.policy import load_rules
from tests.policy.builders import inbound, rules

mime = pytest.importorskip("imss_milter.mime")
parse_message = getattr(mime, "parse_message", None)
pytestmark = pytest.mark.skipif(parse_message is None, reason="MIME parser not available")

PE_BYTES = b"MZ\x90\x00" + b"\x00" * 56 + b"\x40\x00\x00\x00" + b"PE\x00\x00" + b"\x00" * 200


def raw_message(subject="Hello", body="Hi there", attachment=None) -> bytes:
    head = (f"From: a@outside.test\r\nTo: u@example.com\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}\r\n").encode()
    if attachment:
        name, declared, payload = attachment
        head += (f"--XX\r\nContent-Type: {declared}; name=\"{name}\"\r\nContent-Disposition: attachment; "
                 f"filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").encode()
        head += base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return head + b"--XX--\r\n"


def zip_of(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


def verdict_for(ruleset, raw: bytes):
    return ruleset.evaluate(inbound(), parse_message(raw))


def test_defaults_quarantine_a_disguised_executable():
    ruleset = load_rules("/nonexistent-rules-dir", internal_domains=["example.com"])
    verdict = verdict_for(ruleset, raw_message(attachment=("invoice.pdf.exe", "application/pdf", PE_BYTES)))
    assert (verdict.action, verdict.deciding_rule) == ("quarantine", "block-executables")


def test_defaults_find_an_executable_inside_a_zip():
    ruleset = load_rules("/nonexistent-rules-dir", internal_domains=["example.com"])
    payload = zip_of("setup.scr", PE_BYTES)
    verdict = verdict_for(ruleset, raw_message(attachment=("docs.zip", "application/zip", payload)))
    assert verdict.action == "quarantine"


def test_defaults_deliver_a_plain_message():
    ruleset = load_rules("/nonexistent-rules-dir", internal_domains=["example.com"])
    verdict = verdict_for(ruleset, raw_message(attachment=("notes.txt", "text/plain", b"just notes\n")))
    assert (verdict.action, verdict.rules) == ("deliver", [])


def test_encoded_subject_and_wrapped_body_keywords(tmp_path):
    ruleset = rules(tmp_path, """\
        policies:
          - name: german-invoice
            when:
              all:
                - subject: [rechnung für]
                - body: [strictly confidential]
            actions: [{tag_subject: "[CHECK] "}]
        """)
    raw = raw_message(subject="=?utf-8?q?Rechnung_f=C3=BCr_Sie?=", body="Please see the strictly\r\nconfidential file.")
    verdict = verdict_for(ruleset, raw)
    assert verdict.rules == ["german-invoice"]
