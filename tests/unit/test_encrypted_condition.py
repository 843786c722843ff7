"""`encrypted: [categories]` judges each part: the shipped rule quarantines encrypted archives, not a
message that happens to hold an encrypted PDF beside a plain zip."""

from __future__ import annotations

import io
import os
import zipfile
from email.message import EmailMessage

import pytest
from pypdf import PdfWriter

from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.policy import compile_rules, load_rules
from imss_milter.policy.types import Envelope

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENVELOPE = Envelope(sender="alice@example.org", recipients=["bob@example.com"])


def plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo-list.txt", "beach.jpg\nhills.jpg\n")
    return buffer.getvalue()


def encrypted_zip() -> bytes:
    """A zip whose entry says it is encrypted (general purpose flag bit 0), as ZipCrypto writes it."""
    data = bytearray(plain_zip())
    data[6] |= 1
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1
    return bytes(data)


def encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def message(*attachments) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.org", "bob@example.com", "files"
    msg.set_content("Files attached.\n")
    for name, data, subtype in attachments:
        msg.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    return msg.as_bytes()


@pytest.fixture(scope="module")
def shipped():
    return load_rules(os.path.join(REPO, "rules"), internal_domains=("example.com",))


def test_encrypted_pdf_beside_a_plain_zip_is_not_an_encrypted_archive(shipped):
    verdict = shipped.evaluate(ENVELOPE, parse_message(message(("a.pdf", encrypted_pdf(), "pdf"),
                                                               ("photos.zip", plain_zip(), "zip"))))
    assert "quarantine-encrypted-archives" not in verdict.rules
    assert verdict.action == "deliver"


def test_an_encrypted_zip_is_quarantined_by_the_shipped_rules(shipped):
    verdict = shipped.evaluate(ENVELOPE, parse_message(message(("photos.zip", encrypted_zip(), "zip"))))
    assert verdict.rules == ["quarantine-encrypted-archives"]
    [finding] = [f for f in verdict.findings if f["rule"] == "quarantine-encrypted-archives"]
    assert finding["path"] == ["photos.zip", "photo-list.txt"]


def test_encrypted_with_categories_matches_the_part_itself():
    rules = compile_rules([("/r/10.yaml", "policies:\n  - {name: locked-pdf, when: {encrypted: [pdf]}, "
                                          "actions: [reject]}\n")])
    assert rules.evaluate(ENVELOPE, parse_message(message(("a.pdf", encrypted_pdf(), "pdf")))).rules == ["locked-pdf"]
    assert rules.evaluate(ENVELOPE, parse_message(message(("photos.zip", encrypted_zip(), "zip")))).rules == []


@pytest.mark.parametrize("value, expected", [("[archives]", "not 'archives'"), ("[]", "list of true-type"),
                                             ("yes please", "expected true or false or a list")])
def test_bad_encrypted_values_name_file_and_line(value, expected):
    with pytest.raises(ConfigError) as info:
        compile_rules([("/r/10.yaml", f"policies:\n  - name: p\n    when:\n      encrypted: {value}\n"
                                      f"    actions: [reject]\n")])
    assert "10.yaml:4" in str(info.value) and expected in str(info.value)
