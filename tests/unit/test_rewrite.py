"""insert_stamp and strip_attachments on raw messages (imss_milter.rewrite), no milter involved."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from imss_milter.rewrite import rewrite, stamp_text

STAMP = "Checked by the gateway"


def rebuilt(raw: bytes, change) -> email.message.EmailMessage:
    """The message as the MTA would write it: original headers, changed MIME headers, new body."""
    head, _, _ = raw.partition(b"\n\n")
    lines = [line for line in head.split(b"\n")
             if not any(line.lower().startswith(name.lower().encode() + b":") for name in change.headers)]
    lines += [f"{name}: {value}".encode() for name, value in change.headers.items() if value is not None]
    return email.message_from_bytes(b"\r\n".join(lines) + b"\r\n\r\n" + change.body, policy=email.policy.default)


def simple(body: str, **kwargs) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = "test"
    msg.set_content(body, **kwargs)
    return msg.as_bytes()


def test_plain_stamp_goes_after_the_text():
    assert stamp_text("Hello\n\n", STAMP, False) == f"Hello\n\n{STAMP}\n"


def test_html_stamp_goes_before_the_last_body_close_or_at_the_end():
    assert stamp_text("<body>x</body></html>", "a<b", True) == \
        '<body>x<div class="imss-stamp"><p>a&lt;b</p></div>\n</body></html>'
    assert stamp_text("<p>x</p>", STAMP, True).endswith(f"<p>{STAMP}</p></div>\n")


def test_non_ascii_stamp_in_a_latin1_part_that_cannot_hold_it_switches_to_utf8():
    raw = simple("Grüße\n", charset="iso-8859-1", cte="quoted-printable")
    change = rewrite(raw, stamp="Geprüft ✓")
    got = rebuilt(raw, change)
    assert got.get_content_charset() == "utf-8"
    assert got.get_content().replace("\r\n", "\n") == "Grüße\n\nGeprüft ✓\n"


def test_base64_part_stays_base64():
    raw = simple("hello\n", cte="base64")
    got = rebuilt(raw, rewrite(raw, stamp=STAMP))
    assert got["Content-Transfer-Encoding"] == "base64"
    assert got.get_content().replace("\r\n", "\n") == f"hello\n\n{STAMP}\n"


def test_message_with_only_an_attachment_has_nothing_to_stamp():
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="a.bin")
    assert rewrite(msg.as_bytes(), stamp=STAMP) is None


def test_strip_by_name_keeps_other_parts_and_mixed_structure():
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("body\n")
    msg.add_attachment(b"keep", maintype="application", subtype="pdf", filename="keep.pdf")
    msg.add_attachment(b"MZ-bad", maintype="application", subtype="octet-stream", filename="=?utf-8?q?b=C3=A4d?=.exe")
    raw = msg.as_bytes()
    change = rewrite(raw, strip=("bäd.exe",), reference="REF-1")
    assert change.stripped == ["bäd.exe"]
    got = rebuilt(raw, change)
    assert [p.get_filename() for p in got.iter_attachments() if p.get_filename()] == ["keep.pdf"]
    assert b"MZ-bad" not in change.body
    assert any("REF-1" in p.get_content() for p in got.walk() if p.get_content_type() == "text/plain")


def test_strip_of_an_unlocatable_path_removes_every_attachment():
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("body\n")
    msg.add_attachment(b"zipdata", maintype="application", subtype="zip", filename="a.zip")
    change = rewrite(msg.as_bytes(), strip=("other-name.zip/inner.exe",))
    assert change.stripped == ["a.zip"] and change.notes


def test_a_message_that_is_only_an_attachment_becomes_the_note():
    raw = (b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=evil.exe\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nTVpNWk1a\r\n")
    change = rewrite(raw, strip=())
    got = rebuilt(raw, change)
    assert got.get_content_type() == "text/plain"
    assert "evil.exe was removed" in got.get_content()
