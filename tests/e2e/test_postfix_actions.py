"""End to end: the modifying actions (SPEC §4) as a real Postfix delivers the message to the next hop.

insert_stamp (plain, HTML without a body tag, multipart/alternative, signed),
strip_attachments (the original kept in quarantine), bcc, reroute and
archive, each checked on what smtp-sink received.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import smtplib
import time
import uuid
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from tests.helpers.daemon import MilterDaemon
from tests.helpers.stack import e2e_root, mail_stack


pytestmark = pytest.mark.e2e

STAMP = "Scanned by imss-milter: no threats found"

RULES = f"""\
policies:
  - name: stamp
    route: {{from: any, to: any}}
    when: {{subject: {{keywords: ["act-stamp"]}}}}
    actions: [{{insert_stamp: {{text: "{STAMP}"}}}}]
  - name: strip-exe
    route: {{from: any, to: any}}
    when: {{attachment.name: ["*.exe"]}}
    actions: [strip_attachments, {{add_header: {{name: X-IMSS-Stripped, value: "yes"}}}}]
  - name: copy-to-audit
    route: {{from: any, to: any}}
    when: {{subject: {{keywords: ["act-bcc"]}}}}
    actions: [{{bcc: [audit@example.com]}}]
  - name: send-to-review
    route: {{from: any, to: any}}
    when: {{subject: {{keywords: ["act-reroute"]}}}}
    actions: [{{reroute: [review@example.com]}}]
  - name: hold-and-tell
    route: {{from: any, to: any}}
    when: {{subject: {{keywords: ["act-notify"]}}}}
    actions: [{{quarantine: {{area: default}}}}, {{notify: {{to: [admin, sender], template: default}}}}]
  - name: keep-a-copy
    route: {{from: any, to: any}}
    when: {{subject: {{keywords: ["act-archive"]}}}}
    actions: [{{archive: {{area: legal}}}}]
"""


@pytest.fixture(scope="module")
def stack():
    root = e2e_root("imss-e2e-actions-")

    def make_daemon(postfix):
        # notifications go through Postfix's milter-less reinjection port, so they reach the sink too
        notifications = f"""\
notifications:
  smtp: "127.0.0.1:{postfix.reinject_port}"
  from: postmaster@example.com
  admins: [admin@example.com]
  retry_interval: 1s
"""
        return MilterDaemon(root, rules={"50-actions.yaml": RULES}, shipped_rules=False,
                            release_port=postfix.reinject_port, extra_config=notifications)
    try:
        with mail_stack(root, make_daemon) as parts:
            yield parts
    finally:
        shutil.rmtree(root, ignore_errors=True)


def send(postfix, raw: bytes, rcpts=("bob@example.com",)):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        return client.sendmail("alice@example.org", list(rcpts), raw)


def headers(msg, subject: str):
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
    return msg


def delivered(sink, marker: str):
    [captured] = sink.wait_for(1, subject_contains=marker)
    return captured, email.message_from_bytes(captured.raw, policy=email.policy.default)


def test_stamp_in_a_plain_latin1_message_keeps_its_charset(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "hello act-stamp plain")
    msg.set_content("Grüße aus Köln.\n", charset="iso-8859-1", cte="quoted-printable")
    send(postfix, msg.as_bytes())
    _, got = delivered(sink, "act-stamp plain")
    assert got.get_content_charset() == "iso-8859-1"
    text = got.get_content()
    assert text.startswith("Grüße aus Köln.")
    assert text.rstrip().endswith(STAMP)


def test_stamp_in_both_sides_of_multipart_alternative(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "news act-stamp alternative")
    msg.set_content("Plain side. Ümlaut.\n")
    msg.add_alternative("<html><head></head><BODY><p>HTML side</p></BODY></html>\n", subtype="html")
    send(postfix, msg.as_bytes())
    captured, got = delivered(sink, "act-stamp alternative")
    assert got.get_content_type() == "multipart/alternative"
    plain = got.get_body(("plain",)).get_content()
    html = got.get_body(("html",)).get_content()
    assert plain.startswith("Plain side. Ümlaut.") and STAMP in plain
    assert STAMP in html and html.index(STAMP) < html.index("</BODY>")
    assert not got.defects and all(not part.defects for part in got.walk())


def test_stamp_in_html_without_a_body_tag(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "fragment act-stamp nobody")
    msg.set_content("<p>Just a <b>fragment</b></p>", subtype="html")
    send(postfix, msg.as_bytes())
    _, got = delivered(sink, "act-stamp nobody")
    html = got.get_content()
    assert html.startswith("<p>Just a <b>fragment</b></p>")
    assert f"<p>{STAMP}</p>" in html


def test_signed_message_is_not_stamped_so_its_signature_stays_valid(stack):
    sink, postfix, _ = stack
    signed_part = MIMEText("Signed content, every byte counts.\n", "plain", "us-ascii")
    signature = MIMEApplication(b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n",
                                "pgp-signature", name="signature.asc")
    msg = MIMEMultipart("signed", micalg="pgp-sha256", protocol="application/pgp-signature")
    msg.attach(signed_part)
    msg.attach(signature)
    headers(msg, "contract act-stamp signed")
    raw = msg.as_bytes()
    send(postfix, raw)
    captured, got = delivered(sink, "act-stamp signed")
    original_body = raw.split(b"\n\n", 1)[1].replace(b"\r\n", b"\n")
    delivered_body = captured.raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    assert delivered_body.rstrip(b"\n") == original_body.rstrip(b"\n"), "the signed body must be untouched"
    assert STAMP.encode() not in captured.raw


def test_strip_attachments_replaces_the_part_and_keeps_the_original(stack):
    sink, postfix, daemon = stack
    msg = headers(EmailMessage(), "invoice act-strip")
    msg.set_content("See the attached files.\n")
    msg.add_attachment(b"%PDF-1.4 harmless", maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment(b"MZ" + b"\0" * 300, maintype="application", subtype="octet-stream", filename="setup.exe")
    send(postfix, msg.as_bytes())
    captured, got = delivered(sink, "act-strip")
    assert got["X-IMSS-Stripped"] == "yes"
    names = [part.get_filename() for part in got.iter_attachments()]
    assert "report.pdf" in names and "setup.exe" not in names
    notes = [part.get_content() for part in got.walk() if part.get_content_type() == "text/plain"]
    assert any("setup.exe was removed" in note for note in notes)
    assert b"MZ\0\0" not in captured.raw
    listing = json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)
    [held] = [e for e in listing if "act-strip" in e["subject"]]
    assert held["rules"] == ["strip-exe"]
    assert held["id"] in "".join(notes), "the note tells the recipient the reference of the kept original"
    original = daemon.cli("quarantine", "show", held["id"], "--raw", check=True).stdout
    assert 'filename="setup.exe"' in original, "the kept original still has the attachment"


def test_bcc_adds_a_recipient(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "minutes act-bcc")
    msg.set_content("Minutes.\n")
    send(postfix, msg.as_bytes())
    found = sink.wait_for(1, subject_contains="act-bcc")
    recipients = sorted(r for m in found for r in m.recipients)
    deadline = time.monotonic() + 10
    while recipients != ["audit@example.com", "bob@example.com"] and time.monotonic() < deadline:
        time.sleep(0.2)
        recipients = sorted(r for m in sink.wait_for(1, subject_contains="act-bcc") for r in m.recipients)
    assert recipients == ["audit@example.com", "bob@example.com"]
    assert all("audit" not in str(m.message["To"]) for m in found), "a bcc is not written into the headers"


def test_reroute_replaces_the_recipients(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "suspicious act-reroute")
    msg.set_content("Review me.\n")
    send(postfix, msg.as_bytes(), rcpts=("bob@example.com", "carol@example.com"))
    [captured] = sink.wait_for(1, subject_contains="act-reroute")
    assert captured.recipients == ["review@example.com"]


def test_archive_keeps_a_copy_and_delivers(stack):
    sink, postfix, daemon = stack
    msg = headers(EmailMessage(), "agreement act-archive")
    msg.set_content("Archive me.\n")
    send(postfix, msg.as_bytes())
    delivered(sink, "act-archive")
    listing = json.loads(daemon.cli("quarantine", "list", "--archive", "--json", check=True).stdout)
    [entry] = [e for e in listing if "act-archive" in e["subject"]]
    assert entry["area"] == "legal"
    assert not any("act-archive" in e["subject"]
                   for e in json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout))


def notifications_about(sink, marker: str, count: int = 1, timeout: float = 20.0):
    return [m for m in sink.wait_for(count, timeout=timeout, subject_contains=marker)
            if m.message["X-IMSS-Notification"] == "yes"]


def test_notify_sends_the_default_template_to_admin_and_sender(stack):
    sink, postfix, _ = stack
    msg = headers(EmailMessage(), "payment act-notify first")
    msg.set_content("Pay now.\n")
    send(postfix, msg.as_bytes())
    [note] = notifications_about(sink, "act-notify first")
    assert note.sender == "", "notifications use the null sender, so they never bounce"
    assert sorted(note.recipients) == ["admin@example.com", "alice@example.org"]
    got = note.message
    assert got["Auto-Submitted"] == "auto-generated"
    assert str(got["Subject"]) == "[imss-milter] quarantine: payment act-notify first"
    body = got.get_content()
    assert "hold-and-tell" in body and "alice@example.org" in body and "bob@example.com" in body
    assert "NOQUEUE" not in body, "the Postfix queue id is in the notification"


def test_no_notification_about_a_notification_nor_to_the_null_sender(stack):
    sink, postfix, _ = stack
    looped = headers(EmailMessage(), "loop act-notify second")
    looped["X-IMSS-Notification"] = "yes"
    looped.set_content("I am a notification.\n")
    send(postfix, looped.as_bytes())
    bounce = headers(EmailMessage(), "bounce act-notify third")
    bounce.set_content("Delivery report.\n")
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.sendmail("", ["bob@example.com"], bounce.as_bytes())
    [note] = notifications_about(sink, "act-notify third")
    assert note.recipients == ["admin@example.com"], "never to the null sender"
    assert notifications_about(sink, "act-notify second", timeout=3) == []


def test_archived_copy_expires_after_its_area_retention(stack):
    sink, postfix, daemon = stack
    msg = headers(EmailMessage(), "old deal act-archive expiring")
    msg.set_content("Keep me for a while.\n")
    send(postfix, msg.as_bytes())
    delivered(sink, "act-archive expiring")
    listing = json.loads(daemon.cli("quarantine", "list", "--archive", "--json", check=True).stdout)
    [entry] = [e for e in listing if "expiring" in e["subject"]]
    expire = daemon.cli("quarantine", "expire", check=True).stdout
    assert "0 archived" in expire, "a fresh copy is within the default 365 days"
    # age the copy the daemon stored past the archive default (365 days), as time would
    import sqlite3
    from imss_milter.store.sqlite import DB_NAME
    with sqlite3.connect(os.path.join(daemon.state_dir, DB_NAME)) as db:
        db.execute("UPDATE held_message SET time = time - 400 * 86400 WHERE id = ?", (entry["id"],))
    expire = daemon.cli("quarantine", "expire", check=True).stdout
    assert "1 archived" in expire
    listing = json.loads(daemon.cli("quarantine", "list", "--archive", "--json", check=True).stdout)
    assert entry["id"] not in [e["id"] for e in listing]
    assert daemon.cli("quarantine", "show", entry["id"]).returncode != 0
