"""The built-in antivirus backend: the shipped seed finds EICAR wherever MIME hides it, clean mail has no
findings, signature formats and their errors, categories and how `virus:` conditions filter them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zipfile
from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from imss_milter.engines import EngineOptions
from imss_milter.engines import antivirus
from imss_milter.engines.antivirus import signatures as signatures_module
from imss_milter.engines.antivirus.categories import category_from_name, matches, normalise_category
from imss_milter.engines.antivirus.engine import FINDINGS
from imss_milter.engines.antivirus.signatures import load_signatures, parse_hash_line
from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.yamlconf import loads_yaml
from tests.helpers.clamd import eicar

MESSAGES = os.path.join(os.path.dirname(__file__), "..", "messages")


# ---------------------------------------------------------------- building messages

def message(attachments=(), body="Hello,\nthe file you asked for.\n", subject="files") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg.set_content(body)
    for name, data, content_type in attachments:
        maintype, subtype = content_type.split("/")
        if maintype == "text":
            msg.add_attachment(data.decode("ascii"), subtype=subtype, filename=name, cte="7bit")
        elif maintype == "message":
            msg.add_attachment(data, filename=name)     # an EmailMessage: attached as message/rfc822
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(members: dict, mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def seed_engine(timeout: float = 30.0):
    return antivirus.build(EngineOptions(name="antivirus", timeout=timeout), SimpleNamespace(patterns_dir=None))


def scan(raw: bytes, engine=None, categories=()):
    engine = engine or seed_engine()
    model = parse_message(raw)
    scratch: dict = {}
    engine.prepare(model, None, scratch)
    return engine.check("virus", categories, model, None, scratch)


OCTET = "application/octet-stream"


def hiding_places():
    """(label, raw message, the path the finding must name)."""
    virus = eicar()
    inner = message([("eicar.com", virus, OCTET)], subject="inner")
    forwarded_eml = message([("forward.eml", inner.as_bytes(), OCTET)])
    return [
        ("plain text attachment", message([("eicar.txt", virus, "text/plain")]).as_bytes(), ["eicar.txt"]),
        ("base64 attachment", message([("eicar.com", virus, OCTET)]).as_bytes(), ["eicar.com"]),
        ("in the body", message(body=virus.decode() + "\n").as_bytes(), ["text/plain"]),
        ("zip", message([("a.zip", zip_of({"eicar.com": virus}), OCTET)]).as_bytes(), ["a.zip", "eicar.com"]),
        ("tar", message([("a.tar", tar_of({"eicar.com": virus}), OCTET)]).as_bytes(), ["a.tar", "eicar.com"]),
        ("gz", message([("eicar.com.gz", gzip.compress(virus), OCTET)]).as_bytes(), ["eicar.com.gz", "eicar.com"]),
        ("tar.gz", message([("a.tgz", tar_of({"x/eicar.com": virus}, "w:gz"), OCTET)]).as_bytes(),
         ["a.tgz", "x/eicar.com"]),
        ("zip in zip", message([("outer.zip", zip_of({"inner.zip": zip_of({"eicar.com": virus})}), OCTET)]
                               ).as_bytes(), ["outer.zip", "inner.zip", "eicar.com"]),
        ("zip in tar.gz", message([("a.tar.gz", tar_of({"b.zip": zip_of({"eicar.com": virus})}, "w:gz"), OCTET)]
                                  ).as_bytes(), ["a.tar.gz", "b.zip", "eicar.com"]),
        ("message/rfc822", message([("fwd", inner, "message/rfc822")]).as_bytes(), None),
        (".eml attachment", forwarded_eml.as_bytes(), ["forward.eml", "eicar.com"]),
        ("zip in a forwarded message", message([("fwd", message([("a.zip", zip_of({"eicar.com": virus}), OCTET)]),
                                                 "message/rfc822")]).as_bytes(), None),
    ]


# ---------------------------------------------------------------- the seed finds EICAR everywhere

@pytest.mark.parametrize("label, raw, path", hiding_places(), ids=[case[0] for case in hiding_places()])
def test_seed_finds_eicar_wherever_it_hides(label, raw, path):
    findings = scan(raw)
    assert [item["name"] for item in findings] == ["Eicar-Test-Signature"], findings
    [found] = findings
    assert found["category"] == "virus"
    assert found["group"] == "virus"
    if path is not None:
        assert found["path"] == path
        assert found["part"] == "/".join(path)
    else:
        # an attached message's parts are under the attachment's path; the file is the innermost part
        assert found["path"][-1] == "eicar.com"
        assert len(found["path"]) >= 2
    assert found["part"] in found["detail"] and "Eicar-Test-Signature" in found["detail"]


def test_eicar_found_once_per_file_and_in_each_file():
    virus = eicar()
    raw = message([("one.com", virus, OCTET), ("a.zip", zip_of({"two.com": virus, "clean.txt": b"hi"}), OCTET)]
                  ).as_bytes()
    assert sorted(item["part"] for item in scan(raw)) == ["a.zip/two.com", "one.com"]


def test_eicar_followed_by_whitespace_is_still_the_test_file():
    raw = message([("eicar.com", eicar() + b"\r\n   \t\r\n", OCTET)]).as_bytes()
    assert [item["name"] for item in scan(raw)] == ["Eicar-Test-Signature"]


def test_truncated_or_embedded_eicar_is_not_the_test_file():
    virus = eicar()
    raw = message([("cut.com", virus[:-1], OCTET), ("inside.txt", b"prefix " + virus, OCTET),
                   ("big.bin", virus + b"x" * 200, OCTET)]).as_bytes()
    assert scan(raw) == []


# ---------------------------------------------------------------- clean mail has no findings

def docx_without_macros() -> bytes:
    return zip_of({
        "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                               b'package/2006/content-types"><Override PartName="/word/document.xml" '
                               b'ContentType="application/vnd.openxmlformats-officedocument.'
                               b'wordprocessingml.document.main+xml"/></Types>',
        "_rels/.rels": b'<?xml version="1.0"?><Relationships/>',
        "word/document.xml": b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                             b'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Quarterly report</w:t>'
                             b'</w:r></w:p></w:body></w:document>',
    })


def small_pdf() -> bytes:
    from pypdf import PdfWriter
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(name for name in os.listdir(MESSAGES) if name.endswith(".eml")))
def test_repository_messages_are_clean(name):
    with open(os.path.join(MESSAGES, name), "rb") as handle:
        assert scan(handle.read()) == []


def test_office_documents_and_archives_of_them_are_clean():
    docx = docx_without_macros()
    raw = message([
        ("report.docx", docx, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("scan.pdf", small_pdf(), "application/pdf"),
        ("both.zip", zip_of({"report.docx": docx, "notes.txt": b"see the report\n"}), OCTET),
        ("notes.txt", b"EICAR is a test file; this text only names it.\n", "text/plain"),
    ]).as_bytes()
    assert scan(raw) == []


def test_html_newsletter_is_clean():
    msg = message(subject="Newsletter")
    msg.add_alternative("<html><body><h1>News</h1><p>Our antivirus test (EICAR) results are in.</p>"
                        "<a href='https://example.org/'>read</a></body></html>", subtype="html")
    assert scan(msg.as_bytes()) == []


# ---------------------------------------------------------------- hash signature formats

def write(directory, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hdb_and_hsb_signatures_match_by_size_and_digest(tmp_path):
    spy, ad, any_size = b"spy payload\n", b"adware payload", b"matches at any size"
    write(tmp_path, "a.hdb", f"{md5(spy)}:{len(spy)}:Win.Spyware.Test-1\n")
    write(tmp_path, "b.hsb", f"{sha256(ad)}:{len(ad)}:PUA.Win.Adware.Test-2:51\n"
                             f"{sha256(any_size)}:*:Doc.Trojan.AnySize-3\n"
                             f"{hashlib.sha1(b'sha1 one').hexdigest()}:8:Win.Worm.Sha1-4\n")
    signatures = load_signatures(str(tmp_path))
    assert [(d.name, d.category) for d in signatures.scan(spy)] == [("Win.Spyware.Test-1", "spyware")]
    assert [(d.name, d.category) for d in signatures.scan(ad)] == [("PUA.Win.Adware.Test-2", "adware")]
    assert [(d.name, d.category) for d in signatures.scan(any_size)] == [("Doc.Trojan.AnySize-3", "virus")]
    assert [d.name for d in signatures.scan(b"sha1 one")] == ["Win.Worm.Sha1-4"]
    assert signatures.scan(spy + b"x") == []      # size differs
    assert signatures.scan(b"spy payloaX\n") == []   # same size, other digest


def test_a_part_of_a_size_no_signature_has_is_never_hashed(tmp_path, monkeypatch):
    write(tmp_path, "a.hdb", f"{md5(b'abc')}:3:Test.Virus-1\n")
    signatures = load_signatures(str(tmp_path))
    hashed = []
    real_new = hashlib.new
    monkeypatch.setattr(signatures_module.hashlib, "new", lambda name, data=b"": hashed.append(len(data))
                        or real_new(name, data))
    assert signatures.scan(b"x" * 100_000) == []
    assert hashed == []
    assert [d.name for d in signatures.scan(b"abc")] == ["Test.Virus-1"]
    assert hashed == [3]


@pytest.mark.parametrize("extension, line, expected", [
    (".hdb", "nothex:68:Name", "32 hex digits (MD5)"),
    (".hdb", f"{'a' * 64}:68:Name", "32 hex digits (MD5)"),
    (".hsb", f"{'a' * 32}:68:Name", "64 hex digits (SHA256) or 40 hex digits (SHA1)"),
    (".hdb", f"{'a' * 32}:big:Name", "expected a number of bytes or *"),
    (".hdb", f"{'a' * 32}:68", "expected HASH:SIZE:NAME"),
    (".hdb", f"{'a' * 32}:68:Has Space", "without spaces"),
    (".hdb", f"{'a' * 32}:68:Name:x", "functionality level"),
])
def test_bad_hash_lines_are_refused(extension, line, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_hash_line(line, extension)


def test_bad_signature_file_names_file_and_line(tmp_path):
    path = write(tmp_path, "local.hdb", f"# local signatures\n\n{md5(b'ok')}:2:Good-1\n{md5(b'x')}:one:Bad-2\n")
    with pytest.raises(ConfigError) as error:
        load_signatures(str(tmp_path))
    assert error.value.file == path and error.value.line == 4
    assert "size 'one'" in str(error.value)


def test_non_utf8_signature_file_is_refused_with_its_line(tmp_path):
    path = os.path.join(tmp_path, "bad.hsb")
    with open(path, "wb") as handle:
        handle.write(b"# ok\n\xff\xfe:1:x\n")
    with pytest.raises(ConfigError) as error:
        load_signatures(str(tmp_path))
    assert (error.value.file, error.value.line) == (path, 2)


# ---------------------------------------------------------------- YARA rules

YARA_SPYWARE = """\
rule Keystroke_Logger
{
    meta:
        category = "spyware"
    strings:
        $a = "GetAsyncKeyState-imss-test"
    condition:
        $a
}

rule Fake_Dialer
{
    meta:
        category = "Dialer"
        name = "Test.Dialer.Premium"
    strings:
        $a = "ATDT0900-imss-test"
    condition:
        $a
}

rule Plain_Rule
{
    strings:
        $a = "plain-imss-test"
    condition:
        $a
}
"""


def test_yara_meta_category_and_name(tmp_path):
    write(tmp_path, "local.yar", YARA_SPYWARE)
    signatures = load_signatures(str(tmp_path))
    assert [(d.name, d.category) for d in signatures.scan(b"..GetAsyncKeyState-imss-test..")] == \
        [("Keystroke_Logger", "spyware")]
    assert [(d.name, d.category) for d in signatures.scan(b"ATDT0900-imss-test")] == \
        [("Test.Dialer.Premium", "dialer")]
    assert [(d.name, d.category) for d in signatures.scan(b"plain-imss-test")] == [("Plain_Rule", "virus")]


def test_yara_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yara", "rule ok { condition: true }\n\nrule broken { condition: $missing }\n")
    with pytest.raises(ConfigError) as error:
        load_signatures(str(tmp_path))
    assert error.value.file == path and error.value.line == 3
    assert "YARA" in str(error.value)


@pytest.mark.parametrize("target", ["/etc/passwd", "OUTSIDE"])
def test_yara_include_is_refused_with_file_and_line(tmp_path, target):
    # an update must not make the gateway read local files: not /etc/passwd, not even valid rules
    outside = tmp_path / "elsewhere.yar"
    outside.write_text('rule Outside { strings: $a = "outside-imss" condition: $a }\n')
    directory = tmp_path / "antivirus"
    directory.mkdir()
    included = str(outside) if target == "OUTSIDE" else target
    write(str(directory), "main.yar", f'rule ok {{ condition: false }}\n\ninclude "{included}"\n')
    with pytest.raises(ConfigError) as error:
        antivirus.validate_component("antivirus", str(directory))
    assert f"main.yar:3: " in str(error.value)
    assert "include is not allowed in pattern files; put the rules in the component" in str(error.value)


def test_yara_unknown_category_is_refused_with_the_rules_line(tmp_path):
    path = write(tmp_path, "cat.yar", 'rule good { condition: false }\n\nrule typo\n{\n  meta:\n'
                                      '    category = "malwar"\n  condition: false\n}\n')
    with pytest.raises(ConfigError) as error:
        load_signatures(str(tmp_path))
    assert error.value.file == path and error.value.line == 3
    assert "malwar" in str(error.value) and "grayware" in str(error.value)


def test_equal_rule_names_in_two_files_load(tmp_path):
    write(tmp_path, "a.yar", 'rule Same { strings: $a = "first-imss" condition: $a }\n')
    write(tmp_path, "b.yar", 'rule Same { strings: $a = "second-imss" condition: $a }\n')
    signatures = load_signatures(str(tmp_path))
    assert [d.name for d in signatures.scan(b"second-imss")] == ["Same"]


def test_other_files_in_the_directory_are_ignored(tmp_path):
    write(tmp_path, "README", "not a signature file: at all")
    write(tmp_path, "a.hdb", f"{md5(b'abc')}:3:Test.Virus-1\n")
    assert [d.name for d in load_signatures(str(tmp_path)).scan(b"abc")] == ["Test.Virus-1"]


# ---------------------------------------------------------------- categories

@pytest.mark.parametrize("name, category", [
    ("Eicar-Test-Signature", "virus"),
    ("Win.Trojan.Agent-1234-0", "virus"),
    ("Win.Spyware.Keylog-1", "spyware"),
    ("Win.Keylogger.Ardamax-2", "spyware"),
    ("Win.Infostealer.Lokibot-3", "spyware"),
    ("PUA.Win.Adware.OpenCandy-4", "adware"),
    ("PUA.Win.Dialer.Premium-5", "dialer"),
    ("PUA.Win.Joke.Bouncer-6", "joke"),
    ("PUA.Win.Tool.Mimikatz-7", "hacking-tool"),
    ("PUA.Win.Tool.PWTool-8", "hacking-tool"),
    ("PUA.Win.PWTool.Cain-9", "password-cracking"),
    ("PUA.Win.Keygen.Office-10", "password-cracking"),
    ("PUA.Win.RAT.TeamViewer-11", "remote-access"),
    ("PUA.Win.Packer.Upx-12", "grayware"),
    ("PUA.Win.Trojan.Bundler-13", "grayware"),
    ("Win.Trojan.Remote-14", "virus"),
    ("Win.Spyware.Test-1.UNOFFICIAL", "spyware"),
])
def test_category_from_clamav_style_names(name, category):
    assert category_from_name(name) == category


def test_requested_categories_match_their_finer_categories():
    assert matches((), "joke")
    assert matches(("grayware",), "adware")
    assert matches(("adware",), "adware")
    assert not matches(("adware",), "grayware")
    assert not matches(("virus",), "spyware")
    assert matches(("spyware", "virus"), "spyware")
    assert normalise_category("Hacking Tool") == "hacking-tool"
    assert normalise_category("password_cracking") == "password-cracking"
    assert normalise_category("worm") is None


def test_check_filters_findings_by_the_conditions_categories(tmp_path):
    spy, ad = b"spy payload\n", b"adware payload"
    write(tmp_path, "a.hdb", f"{md5(spy)}:{len(spy)}:Win.Spyware.Test-1\n{md5(ad)}:{len(ad)}:PUA.Win.Adware.T-2\n")
    engine = antivirus.BuiltinEngine(EngineOptions(name="antivirus"), load_signatures(str(tmp_path)))
    model = parse_message(message([("s.bin", spy, OCTET), ("a.bin", ad, OCTET)]).as_bytes())
    scratch: dict = {}
    engine.prepare(model, None, scratch)

    def names(categories):
        return sorted(item["name"] for item in engine.check("virus", categories, model, None, scratch))

    assert names(()) == ["PUA.Win.Adware.T-2", "Win.Spyware.Test-1"]
    assert names(("spyware",)) == ["Win.Spyware.Test-1"]
    assert names(("grayware",)) == ["PUA.Win.Adware.T-2"]
    assert names(("adware", "virus")) == ["PUA.Win.Adware.T-2"]
    assert names(("virus",)) == []
    assert len(scratch[FINDINGS]) == 2


def test_check_without_prepare_scans_once_itself():
    engine = seed_engine()
    model = parse_message(message([("eicar.com", eicar(), OCTET)]).as_bytes())
    scratch: dict = {}
    assert [item["name"] for item in engine.check("virus", (), model, None, scratch)] == ["Eicar-Test-Signature"]
    assert engine.check("virus", ("grayware",), model, None, scratch) == []


# ---------------------------------------------------------------- build, config errors, components

def options_from(yaml_text: str, backend="builtin"):
    section = loads_yaml(yaml_text, file="/etc/imss-milter/imss-milter.yaml")
    return EngineOptions(name="antivirus", backend=section.get("backend", backend), section=section)


def test_unknown_key_is_refused_with_file_and_line():
    with pytest.raises(ConfigError) as error:
        antivirus.build(options_from("backend: builtin\nsignatures: /tmp\n"), SimpleNamespace(patterns_dir=None))
    assert error.value.line == 2 and "signatures" in str(error.value)


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="builtin, clamd") as error:
        antivirus.build(options_from("backend: sophos\n"), SimpleNamespace(patterns_dir=None))
    assert error.value.line == 1


def test_installed_pattern_version_is_used_and_a_bad_one_fails_the_build(tmp_path):
    current = tmp_path / "current" / "antivirus"
    current.mkdir(parents=True)
    data = b"locally known bad file"
    write(current, "local.hdb", f"{md5(data)}:{len(data)}:Win.Trojan.Local-1\n")
    settings = SimpleNamespace(patterns_dir=str(tmp_path))
    engine = antivirus.build(EngineOptions(name="antivirus"), settings)
    raw = message([("bad.bin", data, OCTET), ("eicar.com", eicar(), OCTET)]).as_bytes()
    # an installed version replaces the seed as a whole
    assert [item["name"] for item in scan(raw, engine)] == ["Win.Trojan.Local-1"]
    write(current, "local.hdb", "not a signature\n")
    with pytest.raises(ConfigError) as error:
        antivirus.build(EngineOptions(name="antivirus"), settings)
    assert error.value.file.endswith("local.hdb") and error.value.line == 1


def test_validate_component(tmp_path):
    antivirus.validate_component("antivirus", antivirus.component_dir(None, "antivirus"))   # the seed loads
    with pytest.raises(ConfigError, match="at least one"):
        antivirus.validate_component("antivirus", str(tmp_path))
    write(tmp_path, "x.yar", "rule x { condition: nonsense }\n")
    with pytest.raises(ConfigError) as error:
        antivirus.validate_component("antivirus", str(tmp_path))
    assert error.value.line == 1 and error.value.file.endswith("x.yar")
    with pytest.raises(ConfigError):
        antivirus.validate_component("antivirus", str(tmp_path / "missing"))


def test_engine_framework_validates_the_component(tmp_path):
    from imss_milter.engines import validate_component
    write(tmp_path, "a.hsb", "tooshort:1:X\n")
    with pytest.raises(ConfigError):
        validate_component("antivirus", str(tmp_path))


def test_signatures_are_reloaded_when_a_file_changes(tmp_path):
    first, second = b"first bad", b"second bad file"
    path = write(tmp_path, "a.hdb", f"{md5(first)}:{len(first)}:First-1\n")
    one = signatures_module.cached_signatures(str(tmp_path))
    assert signatures_module.cached_signatures(str(tmp_path)) is one
    write(tmp_path, "a.hdb", f"{md5(second)}:{len(second)}:Second-2\n")
    os.utime(path, ns=(1, 1))
    two = signatures_module.cached_signatures(str(tmp_path))
    assert [d.name for d in two.scan(second)] == ["Second-2"] and two.scan(first) == []


@pytest.mark.parametrize("when, got", [("[]", "an empty list"), ("false", "false"), ("3", "a number"), ("", "nothing (null)")])
def test_virus_condition_needs_true_or_categories(when, got):
    from imss_milter.policy import compile_rules
    with pytest.raises(ConfigError) as error:
        compile_rules([("/r/10-av.yaml", "policies:\n  - name: av\n    when:\n"
                                         f"      virus: {when}\n    actions: [reject]\n")])
    assert "10-av.yaml:4: " in str(error.value)
    assert f"virus: expected true or a non-empty list of categories, got {got}" in str(error.value)
