"""The clamd backend against a real clamd (Debian's clamav-daemon) started by the test with its own databases.

The databases are written here (no freshclam, no internet): the EICAR hash
as ClamAV ships it, a made-up spyware body signature (.ndb) and a made-up
adware hash (.hdb), so categories come from real clamd names.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from email.message import EmailMessage

import pytest

from imss_milter.engines import EngineOptions
from imss_milter.engines import antivirus
from imss_milter.engines.antivirus.clamd import ClamdError
from imss_milter.milter import ImssMilter
from imss_milter.mime import parse_message
from imss_milter.mime.model import FLAG_ARCHIVE_LIMIT
from imss_milter.runtime import Runtime
from imss_milter.policy.types import Envelope
from tests.helpers.clamd import Clamd, clamd_available, eicar
from tests.helpers.milterctx import run_message
from tests.helpers.runtime import runtime_for

pytestmark = pytest.mark.skipif(not clamd_available(), reason="clamd (clamav-daemon) is not installed")

SPYWARE_MARKER = b"imss-test-keylogger-sends-your-keys"
ADWARE_FILE = b"imss test adware: shows you offers you never asked for\n"
OCTET = "application/octet-stream"


def databases() -> dict[str, str]:
    virus = eicar()
    return {
        "imss-test.hdb": f"{hashlib.md5(virus).hexdigest()}:{len(virus)}:Eicar-Test-Signature\n"
                         f"{hashlib.md5(ADWARE_FILE).hexdigest()}:{len(ADWARE_FILE)}:PUA.Win.Adware.ImssTest-2\n",
        "imss-test.ndb": f"Win.Spyware.ImssTest-1:0:*:{SPYWARE_MARKER.hex()}\n",
    }


@pytest.fixture(scope="module")
def clamd():
    server = Clamd(databases()).start()
    yield server
    server.cleanup()


def message(attachments=(), subject="files") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg.set_content("Hello, see the attachment.\n")
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def engine_for(address: str, **extra):
    section = {"backend": "clamd", "socket": address, **extra}
    return antivirus.build(EngineOptions(name="antivirus", backend="clamd", timeout=10.0, section=section), None)


def scan(engine, raw: bytes, categories=()):
    model = parse_message(raw)
    scratch: dict = {}
    engine.prepare(model, None, scratch)
    return engine.check("virus", categories, model, None, scratch), model


def test_eicar_in_zip_found_by_clamd_on_the_member(clamd):
    findings, _ = scan(engine_for(clamd.address), message([("invoice.zip", zip_of({"eicar.com": eicar()}))]))
    assert [(item["name"], item["category"], item["part"]) for item in findings] == \
        [("Eicar-Test-Signature.UNOFFICIAL", "virus", "invoice.zip/eicar.com")]


def test_clean_message_has_no_findings(clamd):
    raw = message([("notes.zip", zip_of({"notes.txt": b"meeting at ten\n"})), ("a.bin", b"\x00\x01" * 500)])
    findings, _ = scan(engine_for(clamd.address), raw)
    assert findings == []


def test_categories_from_clamd_names(clamd):
    engine = engine_for(clamd.address)
    raw = message([("tool.exe", b"MZ....." + SPYWARE_MARKER + b"....."), ("offers.bin", ADWARE_FILE)])
    found = {item["name"]: item["category"] for item in scan(engine, raw)[0]}
    assert found == {"Win.Spyware.ImssTest-1.UNOFFICIAL": "spyware",
                     "PUA.Win.Adware.ImssTest-2.UNOFFICIAL": "adware"}
    assert [item["part"] for item in scan(engine, raw, ("grayware",))[0]] == ["offers.bin"]
    assert [item["part"] for item in scan(engine, raw, ("spyware",))[0]] == ["tool.exe"]
    assert scan(engine, raw, ("virus",))[0] == []


def test_sessions_are_reused_and_a_restarted_clamd_is_reconnected(tmp_path):
    with Clamd(databases()) as server:
        engine = engine_for(server.address)
        raw = message([("eicar.com", eicar())])
        assert len(scan(engine, raw)[0]) == 1
        assert len(engine.client.pool.idle) == 1          # the session went back to the pool
        server.stop()
        server.start()                                    # the pooled session is now dead
        assert len(scan(engine, raw)[0]) == 1


def test_part_over_max_stream_is_flagged_not_failed(clamd):
    engine = engine_for(clamd.address, max_stream="1KB")
    raw = message([("eicar.com", eicar()), ("big.bin", b"\x01" * 5000)])
    findings, model = scan(engine, raw)
    assert [item["part"] for item in findings] == ["eicar.com"]
    assert FLAG_ARCHIVE_LIMIT in model.flags


# ---------------------------------------------------------------- through the Runtime and the milter

RULES = """\
policies:
  - name: quarantine-viruses
    route: {from: any, to: any}
    when: {virus: true}
    actions: [{quarantine: {area: virus}}]
  - name: tag-grayware
    route: {from: any, to: any}
    when: {virus: [grayware]}
    actions: [{add_header: {name: X-IMSS-Grayware, value: "yes"}}]
"""


def clamd_runtime(tmp_path, address: str, on_error: str = "tempfail") -> Runtime:
    return runtime_for(tmp_path, {"10-virus.yaml": RULES}, f"""\
        engines:
          antivirus: {{backend: clamd, socket: "{address}", timeout: 10s, on_error: {on_error}}}
        """)


ENVELOPE = Envelope(sender="alice@example.org", recipients=["bob@example.com"], client_ip="192.0.2.10")


def test_clamd_stopped_answers_per_on_error(tmp_path):
    with Clamd(databases()) as server:
        tempfail = clamd_runtime(tmp_path / "t", server.address, "tempfail")
        accept = clamd_runtime(tmp_path / "a", server.address, "accept")
        raw = message([("eicar.com", eicar())])
        assert tempfail.scan(raw, ENVELOPE).verdict.action == "quarantine"
        server.stop()
        with pytest.raises(ClamdError):
            tempfail.scan(raw, ENVELOPE)
        verdict = accept.scan(raw, ENVELOPE).verdict
        assert verdict.action == "deliver" and verdict.rules == []
        previous = ImssMilter.runtime
        try:
            ImssMilter.runtime = tempfail
            assert run_message(raw, queue_id="QDOWN1").result == "tempfail"    # the MTA retries later
            ImssMilter.runtime = accept
            assert run_message(raw, queue_id="QDOWN2").result in ("accept", "continue")
        finally:
            ImssMilter.runtime = previous


def test_milter_quarantines_a_virus_found_by_clamd(clamd, tmp_path):
    runtime = clamd_runtime(tmp_path, clamd.address)
    previous = ImssMilter.runtime
    ImssMilter.runtime = runtime
    try:
        outcome = run_message(message([("report.zip", zip_of({"eicar.com": eicar()}))]), queue_id="QVIRUS1")
        assert outcome.result == "discard"
        [held] = runtime.store.list()
        assert held["area"] == "virus" and held["rules"] == ["quarantine-viruses"]
        [record] = runtime.store.query_logs(kind="messages", queue_id="QVIRUS1")
        [finding] = [item for item in record["findings"] if item.get("condition") == "virus"]
        assert finding["name"] == "Eicar-Test-Signature.UNOFFICIAL"
        assert finding["part"] == "report.zip/eicar.com"

        outcome = run_message(message([("offers.bin", ADWARE_FILE)]), queue_id="QGRAY1")
        assert outcome.result == "discard"       # grayware is a detection too: virus: true holds
        clean = run_message(message([("notes.txt", b"meeting at ten\n")]), queue_id="QCLEAN1")
        assert clean.result in ("accept", "continue") and not clean.added_headers
    finally:
        ImssMilter.runtime = previous


def test_milter_tags_grayware_and_delivers_when_only_grayware_rules_exist(clamd, tmp_path):
    runtime = clamd_runtime(tmp_path, clamd.address)
    (tmp_path / "rules" / "20-off.yaml").write_text(
        "policies:\n  - name: quarantine-viruses\n    enabled: false\n")
    assert runtime.reload()
    previous = ImssMilter.runtime
    ImssMilter.runtime = runtime
    try:
        outcome = run_message(message([("offers.bin", ADWARE_FILE)]), queue_id="QGRAY2")
        assert outcome.result in ("accept", "continue")
        assert [(name, value.strip()) for name, value in outcome.added_headers] == [("X-IMSS-Grayware", "yes")]
    finally:
        ImssMilter.runtime = previous
