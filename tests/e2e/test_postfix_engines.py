"""The engines under a real Postfix: the shipped rules act on antivirus findings with the built-in
backend and with a real clamd, on spam scores (GTUBE) and on URIBL listings served by rbldnsd."""

from __future__ import annotations

import hashlib
import io
import json
import smtplib
import uuid
import zipfile
from email.message import EmailMessage

import pytest

from tests.helpers.clamd import Clamd, clamd_available, eicar
from tests.helpers.daemon import MilterDaemon
from tests.helpers.rbldnsd import Rbldnsd
from tests.helpers.stack import e2e_root, mail_stack

# split so this file itself is not a GTUBE message
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD" + "-ANTI-UBE-TEST-EMAIL*C.34X"
URL_RULES = """\
policies:
  - name: phishing-links
    route: {from: any, to: internal}
    when: {url.reputation: [phishing]}
    actions: [{quarantine: {area: phishing}}]
"""


def make_message(subject: str, body: str = "Hello.\n", attachment: tuple | None = None,
                 html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def send(postfix, raw: bytes):
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        return client.sendmail("alice@example.org", ["bob@example.com"], raw)


def quarantined(daemon) -> list[dict]:
    return json.loads(daemon.cli("quarantine", "list", "--json", check=True).stdout)


@pytest.fixture(scope="module")
def builtin_stack():
    """The embedded defaults: built-in antivirus and spam engines, the shipped rules."""
    root = e2e_root("imss-eng-")
    with mail_stack(root, lambda postfix: MilterDaemon(root, release_port=postfix.reinject_port)) as parts:
        yield parts


@pytest.fixture(scope="module")
def service_stack():
    """clamd as the antivirus backend, URIBL lookups on rbldnsd, a spam score header."""
    if not clamd_available():
        pytest.skip("clamd (clamav-daemon) is not installed")
    virus = eicar()
    clamd = Clamd({"imss-e2e.hdb": f"{hashlib.md5(virus).hexdigest()}:{len(virus)}:Eicar-Test-Signature\n"}).start()
    dns = Rbldnsd({"uribl.e2e.test": ("dnset", "phish.test :127.0.1.4:phishing\n")}).start()
    extra = (f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 2s}}\n"
             f"engines:\n"
             f"  antivirus: {{backend: clamd, socket: '{clamd.address}'}}\n"
             f"  spam: {{backend: builtin, score_header: X-IMSS-Spam-Score}}\n"
             f"  url:\n"
             f"    zones:\n"
             f"      - {{zone: uribl.e2e.test, type: domain, codes: {{'127.0.1.4': phishing}}}}\n")
    root = e2e_root("imss-eng-svc-")
    try:
        with mail_stack(root, lambda postfix: MilterDaemon(root, rules={"50-urls.yaml": URL_RULES},
                                                           release_port=postfix.reinject_port,
                                                           extra_config=extra)) as parts:
            yield parts + (clamd,)
    finally:
        dns.stop()
        clamd.cleanup()


def test_builtin_antivirus_quarantines_eicar_in_a_zip(builtin_stack):
    sink, postfix, daemon = builtin_stack
    send(postfix, make_message("report e2e-av-builtin", attachment=("report.zip", zipped("report.com", eicar()))))
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-av-builtin") == []
    [entry] = [q for q in quarantined(daemon) if "e2e-av-builtin" in (q.get("subject") or "")]
    assert entry["area"] == "virus" and entry["rules"] == ["quarantine-viruses"]
    shown = json.loads(daemon.cli("quarantine", "show", entry["id"], "--json", check=True).stdout)
    assert "EICAR" in json.dumps(shown.get("findings", shown)).upper()


def test_builtin_spam_engine_tags_gtube_and_delivers_clean_mail(builtin_stack):
    sink, postfix, _ = builtin_stack
    send(postfix, make_message("offer e2e-gtube", body=f"Buy now.\n{GTUBE}\n"))
    send(postfix, make_message("minutes e2e-clean", body="The minutes of Tuesday's meeting.\n"))
    [spam] = sink.wait_for(1, subject_contains="e2e-gtube")
    assert str(spam.message["Subject"]) == "[SPAM] offer e2e-gtube"
    assert spam.message["X-IMSS-Spam"] == "yes"
    [clean] = sink.wait_for(1, subject_contains="e2e-clean")
    assert str(clean.message["Subject"]) == "minutes e2e-clean"
    assert clean.message["X-IMSS-Spam"] is None


def test_clamd_backend_finds_eicar_sent_part_by_part(service_stack):
    sink, postfix, daemon, clamd = service_stack
    send(postfix, make_message("scan e2e-av-clamd", attachment=("nested.zip", zipped("eicar.txt", eicar()))))
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-av-clamd") == []
    [entry] = [q for q in quarantined(daemon) if "e2e-av-clamd" in (q.get("subject") or "")]
    assert entry["rules"] == ["quarantine-viruses"]


def test_phishing_link_listed_in_uribl_is_quarantined_and_clean_links_pass(service_stack):
    sink, postfix, daemon, _ = service_stack
    send(postfix, make_message("account e2e-phish", html='<p>Please <a href="https://login.phish.test/verify">'
                                                        "verify</a> your account</p>"))
    send(postfix, make_message("news e2e-links", html='<p>See <a href="https://www.example.net/">our site</a></p>'))
    [clean] = sink.wait_for(1, subject_contains="e2e-links")
    assert clean.message["X-IMSS-Spam-Score"] is not None and clean.message["X-IMSS-Spam-Score"].startswith("score=")
    assert sink.wait_for(1, timeout=3, subject_contains="e2e-phish") == []
    [entry] = [q for q in quarantined(daemon) if "e2e-phish" in (q.get("subject") or "")]
    assert entry["area"] == "phishing" and "phishing-links" in entry["rules"]
    # the listing is also a spam score input (url_scores), so the spam policy matched too
    assert entry["rules"] == ["tag-spam", "phishing-links"]


def test_clamd_down_tempfails_and_nothing_is_lost(service_stack):
    sink, postfix, _, clamd = service_stack
    clamd.stop()
    try:
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(postfix, make_message("while clamd is down e2e-clamd-down"))
        assert 400 <= info.value.smtp_code < 500, "the client keeps the message and retries"
        assert sink.wait_for(1, timeout=2, subject_contains="e2e-clamd-down") == []
    finally:
        clamd.start()
    send(postfix, make_message("after clamd is back e2e-clamd-back"))
    assert sink.wait_for(1, subject_contains="e2e-clamd-back")
