"""Active and unscannable content: Office macros, encrypted files, 7z, archives the scanner cannot open.

Every sample is built here: OLE2 files by a small Compound File writer
(olefile reads but cannot write), OOXML packages by zipfile, an encrypted
OOXML by msoffcrypto, encrypted PDFs by pypdf, 7z archives by py7zr.
"""

from __future__ import annotations

import base64
import io
import struct
import zipfile

import pytest

from imss_milter.mime import FLAG_ARCHIVE_LIMIT, FLAG_ENCRYPTED, FLAG_MALFORMED, FLAG_UNSCANNABLE, Limits
from imss_milter.mime import parse_message, true_type_of
from tests.policy.builders import inbound, rules

# --- a minimal Compound File (CFB v3) writer ------------------------------------

_SECTOR = 512
_FREE, _END, _FAT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
_NOSTREAM = 0xFFFFFFFF
_STREAM_MIN = 4096      # streams this long live in normal sectors, so no mini stream is needed


def cfb(tree: dict) -> bytes:
    """A Compound File from {name: bytes (a stream) | dict (a storage)}.

    Streams are padded to 4096 bytes so every one lives in regular sectors;
    siblings are chained through their right links (a valid, if lopsided, tree).
    """
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "child": _NOSTREAM}]
    streams: list[tuple[int, bytes]] = []

    def add_children(parent_index: int, children: dict):
        previous = None
        for name, value in children.items():
            index = len(entries)
            entry = {"name": name, "type": 1 if isinstance(value, dict) else 2, "child": _NOSTREAM}
            entries.append(entry)
            if previous is None:
                entries[parent_index]["child"] = index
            else:
                entries[previous]["right"] = index
            previous = index
            if isinstance(value, dict):
                add_children(index, value)
            else:
                data = value + b"\x00" * max(0, _STREAM_MIN - len(value))
                streams.append((index, data))

    add_children(0, tree)
    dir_sectors = -(-len(entries) * 128 // _SECTOR)
    stream_sectors = sum(-(-len(data) // _SECTOR) for _i, data in streams)
    fat_sectors = 1
    while (fat_sectors + dir_sectors + stream_sectors) > fat_sectors * (_SECTOR // 4):
        fat_sectors += 1
    fat = [_FAT] * fat_sectors
    first_dir = len(fat)
    fat += [first_dir + i + 1 for i in range(dir_sectors - 1)] + [_END]
    body = b""
    for index, data in streams:
        count = -(-len(data) // _SECTOR)
        start = len(fat)
        entries[index]["start"], entries[index]["size"] = start, len(data)
        fat += [start + i + 1 for i in range(count - 1)] + [_END]
        body += data + b"\x00" * (count * _SECTOR - len(data))
    fat += [_FREE] * (fat_sectors * (_SECTOR // 4) - len(fat))
    directory = b"".join(_dir_entry(e) for e in entries)
    directory += b"\x00" * (dir_sectors * _SECTOR - len(directory))
    difat = list(range(fat_sectors)) + [_FREE] * (109 - fat_sectors)
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16
              + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\x00" * 6
              + struct.pack("<IIIIIIIII", 0, fat_sectors, first_dir, 0, 4096, _END, 0, _END, 0)
              + struct.pack("<109I", *difat))
    assert len(header) == _SECTOR
    return header + struct.pack(f"<{len(fat)}I", *fat) + directory + body


def _dir_entry(entry: dict) -> bytes:
    name = entry["name"].encode("utf-16-le") + b"\x00\x00"
    return (name + b"\x00" * (64 - len(name))
            + struct.pack("<HBB", len(name), entry["type"], 1)
            + struct.pack("<III", entry.get("left", _NOSTREAM), entry.get("right", _NOSTREAM), entry["child"])
            + b"\x00" * 16 + b"\x00" * 4 + b"\x00" * 16
            + struct.pack("<IQ", entry.get("start", _END if entry["type"] == 5 else 0), entry.get("size", 0)))


def vba_project() -> dict:
    """The storages and streams MS-OVBA requires of a VBA project."""
    return {"VBA": {"_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00", "dir": b"\x01\x00\x00"},
            "PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"\r\nDocument=ThisDocument/&H00000000\r\n'}


def word_fib(encrypted: bool = False) -> bytes:
    """The start of a WordDocument stream: a FIB base whose fEncrypted bit may be set."""
    flags = 0x0100 if encrypted else 0
    return struct.pack("<HHHHHH", 0xA5EC, 0x00C1, 0, 0x0409, 0, flags) + b"\x00" * 500


def word_doc(macros: bool = False, encrypted: bool = False) -> bytes:
    tree = {"WordDocument": word_fib(encrypted), "1Table": b"\x00" * 64}
    if macros:
        tree["Macros"] = vba_project()
    return cfb(tree)


def ppt(macros: bool = False) -> bytes:
    document = struct.pack("<HHI", 0x000F, 0x03E8, 0)        # a DocumentContainer header
    if macros:
        # VbaInfoContainer holding a VbaInfoAtom (MS-PPT 2.4.17, 2.4.18)
        document += struct.pack("<HHI", 0x001F, 0x03FF, 0x14) + struct.pack("<HHIIII", 0x0002, 0x0400, 0x0C, 1, 0, 2)
    return cfb({"PowerPoint Document": document, "Current User": b"\x00" * 32})


CONTENT_TYPES = (b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 b'<Default Extension="xml" ContentType="application/xml"/>%s</Types>')


def docx(extra: dict | None = None, overrides: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", CONTENT_TYPES % overrides)
        package.writestr("word/document.xml", b"<w:document><w:body><w:p>Quarterly figures</w:p></w:body></w:document>")
        for name, data in (extra or {}).items():
            package.writestr(name, data)
    return out.getvalue()


def docm() -> bytes:
    return docx({"word/vbaProject.bin": cfb(vba_project())})


def encrypted_docx(password: str = "s3cret") -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(docx())).encrypt(password, out)
    return out.getvalue()


def pdf(password: str | None = None, subject: str = "") -> bytes:
    from pypdf import PdfWriter
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    if subject:
        writer.add_metadata({"/Subject": subject})
    if password:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sevenzip(members: dict, password: str | None = None, header_encryption: bool = False) -> bytes:
    import py7zr
    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w", password=password, header_encryption=header_encryption) as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return out.getvalue()


def zip_of(members: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# A local header (deflate, no flags, sizes unknown) followed by bytes that do not inflate.
CORRUPT_ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 16 + b"\x05\x00\x00\x00" + b"a.exe" + b"\xff" * 300

EXE = b"MZ" + b"\x00" * 0x3A + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 100


def with_attachment(name: str, data: bytes) -> bytes:
    return (b"From: a@example.net\r\nTo: b@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: text/plain\r\n\r\nsee attached\r\n--zz\r\n"
            + f'Content-Type: application/octet-stream; name="{name}"\r\n'.encode()
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data) + b"--zz--\r\n")


def part_named(model, name):
    return next(p for p in model.parts if p.name == name)


# --- Office macros ----------------------------------------------------------------

def test_the_cfb_writer_makes_files_olefile_reads():
    import olefile
    ole = olefile.OleFileIO(io.BytesIO(word_doc(macros=True)))
    assert ["Macros", "VBA", "dir"] in ole.listdir()
    assert ole.openstream("WordDocument").read(2) == b"\xec\xa5"


@pytest.mark.parametrize("name, data", [
    ("invoice.doc", word_doc(macros=True)),
    ("book.xls", cfb({"Workbook": b"\x09\x08\x10\x00" + b"\x00" * 16, "_VBA_PROJECT_CUR": vba_project()})),
    ("deck.ppt", ppt(macros=True)),
    ("invoice.docm", docm()),
    ("renamed-as.docx", docm()),
])
def test_office_files_with_macros_are_office_macro(name, data):
    assert true_type_of(data, name)[0] == "office-macro"
    model = parse_message(with_attachment(name, data))
    assert part_named(model, name).true_type == "office-macro"
    assert not model.errors


@pytest.mark.parametrize("name, data", [
    ("report.doc", word_doc()),
    ("book.xls", cfb({"Workbook": b"\x09\x08\x10\x00" + b"\x00" * 16})),
    ("deck.ppt", ppt()),
    ("report.docx", docx()),
])
def test_macro_free_office_files_stay_document(name, data):
    model = parse_message(with_attachment(name, data))
    part = part_named(model, name)
    assert part.true_type == "document"
    assert not part.encrypted and not part.unscannable
    assert FLAG_UNSCANNABLE not in model.flags and FLAG_ENCRYPTED not in model.flags


def test_word_text_naming_macro_streams_is_no_macro():
    """The old byte search took UTF-16 "Macros" in a document's text for a macro storage."""
    text = "Enable Macros and the VBA\x00 project".encode("utf-16-le")
    data = cfb({"WordDocument": word_fib() + text, "1Table": b"\x00" * 64})
    assert true_type_of(data, "memo.doc")[0] == "document"


def test_vba_project_under_another_part_name_found_by_content_type():
    """Word loads the VBA project through its relationship, whatever the part is called."""
    override = (b'<Override PartName="/word/editdata.mso" '
                b'ContentType="application/vnd.ms-office.vbaProject"/>')
    data = docx({"word/editdata.mso": cfb(vba_project())}, overrides=override)
    assert b"vbaProject.bin" not in data
    assert true_type_of(data, "notes.docx")[0] == "office-macro"


def test_vba_project_member_of_a_docm_is_office_macro_itself():
    model = parse_message(with_attachment("invoice.docm", docm()))
    member = part_named(model, "word/vbaProject.bin")
    assert member.inside_document and member.true_type == "office-macro"


def test_excel4_macro_sheet_in_ooxml_is_office_macro():
    data = docx({"xl/macrosheets/sheet1.xml": b"<xm:macrosheet/>"})
    assert true_type_of(data, "book.xlsx")[0] == "office-macro"


# --- encrypted ---------------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("secret.docx", encrypted_docx()),
    ("secret.doc", word_doc(encrypted=True)),
    ("secret.pdf", pdf(password="pw")),
])
def test_password_protected_documents_are_encrypted(name, data):
    model = parse_message(with_attachment(name, data))
    part = part_named(model, name)
    assert part.encrypted
    assert FLAG_ENCRYPTED in model.flags
    assert part.true_type in ("document", "pdf")


def test_encrypt_named_at_the_end_of_a_long_pdf_is_found():
    # the search for /Encrypt covers the whole file, whatever fills it (a run of "0" bytes once made
    # the substring search compare at every offset); a damaged PDF naming it counts as encrypted
    data = b"%PDF-1.4\n1 0 obj << /Length 200000 >> stream\n" + b"0" * 200_000 + b"\nendstream endobj\n" \
        + b"trailer << /Encrypt 9 0 R >>\n%%EOF\n"
    model = parse_message(with_attachment("statement.pdf", data))
    assert part_named(model, "statement.pdf").encrypted
    assert FLAG_ENCRYPTED in model.flags


def test_plain_pdf_that_mentions_encrypt_is_not_encrypted():
    # pypdf writes the "/" escaped; the same length unescaped keeps the xref offsets right
    data = pdf(subject="how to use /Encrypt").replace(b"use \\057Encrypt", b"use    /Encrypt")
    assert b"/Encrypt" in data
    model = parse_message(with_attachment("manual.pdf", data))
    assert part_named(model, "manual.pdf").true_type == "pdf"
    assert FLAG_ENCRYPTED not in model.flags


def test_encrypted_7z_entries_listed_and_flagged():
    data = sevenzip({"payload.exe": EXE, "readme.txt": b"hi"}, password="pw")
    model = parse_message(with_attachment("files.7z", data))
    members = {p.name: p for p in model.parts if p.origin == "archive"}
    assert set(members) == {"payload.exe", "readme.txt"}
    assert all(m.encrypted for m in members.values())
    assert FLAG_ENCRYPTED in model.flags


def test_7z_with_encrypted_headers_is_encrypted():
    data = sevenzip({"payload.exe": EXE}, password="pw", header_encryption=True)
    model = parse_message(with_attachment("files.7z", data))
    archive = part_named(model, "files.7z")
    assert archive.true_type == "archive" and archive.encrypted
    assert FLAG_ENCRYPTED in model.flags
    assert [p for p in model.parts if p.origin == "archive"] == []


# --- 7z listing and limits ----------------------------------------------------------

def test_7z_members_get_names_and_true_types():
    data = sevenzip({"docs/setup.exe": EXE, "docs/invoice.doc": word_doc(macros=True), "notes.txt": b"hello"})
    model = parse_message(with_attachment("bundle.7z", data))
    members = {p.name: p for p in model.parts if p.origin == "archive"}
    assert members["docs/setup.exe"].true_type == "executable"
    assert members["docs/invoice.doc"].true_type == "office-macro"
    assert members["notes.txt"].payload == b"hello"
    assert members["docs/setup.exe"].path == ["bundle.7z", "docs/setup.exe"]
    assert not ({FLAG_UNSCANNABLE, FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED} & model.flags)


def test_7z_bomb_hits_the_limit_without_decompressing():
    data = sevenzip({"zeros.bin": b"\x00" * (8 * 1024 * 1024)})
    assert len(data) < 64 * 1024
    model = parse_message(with_attachment("bomb.7z", data))
    assert FLAG_ARCHIVE_LIMIT in model.flags
    member = part_named(model, "zeros.bin")       # listed, so its name can still be judged
    assert member.payload == b""


def test_7z_over_the_expansion_budget_hits_the_limit():
    data = sevenzip({"a.txt": bytes(range(256)) * 400, "b.txt": bytes(range(255, -1, -1)) * 400})
    model = parse_message(with_attachment("big.7z", data), Limits(archive_max_expanded=150_000))
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert sum(p.size for p in model.parts if p.origin == "archive") <= 150_000


def test_7z_entry_count_limit():
    data = sevenzip({f"f{i}.txt": b"x" for i in range(12)})
    model = parse_message(with_attachment("many.7z", data), Limits(archive_max_entries=5))
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert len([p for p in model.parts if p.origin == "archive"]) == 5


def test_7z_inside_zip_is_listed_within_depth():
    inner = sevenzip({"run.exe": EXE})
    model = parse_message(with_attachment("outer.zip", zip_of({"inner.7z": inner})))
    assert part_named(model, "run.exe").path == ["outer.zip", "inner.7z", "run.exe"]
    nested = parse_message(with_attachment("outer.zip", zip_of({"inner.7z": inner})), Limits(archive_max_depth=1))
    assert FLAG_ARCHIVE_LIMIT in nested.flags
    assert not any(p.name == "run.exe" for p in nested.parts)


# --- unscannable ----------------------------------------------------------------------

UNOPENABLE = {
    "files.rar": b"Rar!\x1a\x07\x00" + bytes(range(256)) * 4,
    "files.cab": b"MSCF\x00\x00\x00\x00" + bytes(range(256)) * 4,
    "files.arj": b"\x60\xea\x22\x00" + bytes(range(256)) * 4,
    "files.ace": b"\x00" * 7 + b"**ACE**" + bytes(range(256)) * 4,
}


@pytest.mark.parametrize("name", sorted(UNOPENABLE))
def test_archives_the_scanner_cannot_open_are_unscannable(name):
    model = parse_message(with_attachment(name, UNOPENABLE[name]))
    part = part_named(model, name)
    assert part.true_type == "archive"
    assert part.unscannable
    assert FLAG_UNSCANNABLE in model.flags
    assert not model.errors


def test_corrupt_zip_is_unscannable_and_malformed():
    data = CORRUPT_ZIP
    model = parse_message(with_attachment("broken.zip", data))
    assert part_named(model, "broken.zip").unscannable
    assert {FLAG_UNSCANNABLE, FLAG_MALFORMED} <= model.flags
    assert not model.errors


def test_zip_member_with_unknown_method_is_unscannable():
    data = bytearray(zip_of({"a.exe": EXE}))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        data[at + offset:at + offset + 2] = struct.pack("<H", 97)
    model = parse_message(with_attachment("odd.zip", bytes(data)))
    assert FLAG_UNSCANNABLE in model.flags


def test_readable_zip_with_a_damaged_directory_is_not_unscannable():
    data = zip_of({"a.txt": b"hello"})
    cut = data[:data.find(b"PK\x01\x02")]        # central directory gone, local headers intact
    model = parse_message(with_attachment("cut.zip", cut))
    assert part_named(model, "a.txt").payload == b"hello"
    assert FLAG_MALFORMED in model.flags and FLAG_UNSCANNABLE not in model.flags


@pytest.mark.parametrize("data", [
    b"7z\xbc\xaf\x27\x1c" + b"\x00\x04" + bytes(range(256)) * 2,         # garbage after the signature
    sevenzip({"a.exe": EXE, "b.txt": b"x" * 5000})[:-40],                 # truncated headers
])
def test_damaged_7z_is_unscannable(data):
    model = parse_message(with_attachment("broken.7z", data))
    assert part_named(model, "broken.7z").unscannable
    assert {FLAG_UNSCANNABLE, FLAG_MALFORMED} <= model.flags
    assert not model.errors


def test_truncated_ole_keeps_its_macro_verdict_and_is_flagged():
    data = word_doc(macros=True)[:3000]
    model = parse_message(with_attachment("cut.doc", data))
    part = part_named(model, "cut.doc")
    assert part.true_type == "office-macro"      # stream names still there: judged by them
    assert part.unscannable
    assert {FLAG_UNSCANNABLE, FLAG_MALFORMED} <= model.flags
    assert not model.errors


def test_garbage_after_ole_signature_does_not_crash():
    model = parse_message(with_attachment("x.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 3000))
    assert part_named(model, "x.doc").unscannable
    assert not model.errors


# --- rules ------------------------------------------------------------------------------

RULES = """
policies:
  - name: macros
    when: {attachment.true_type: [office-macro]}
    actions: [{add_header: {name: X-Macro, value: "yes"}}]
  - name: encrypted
    when: {encrypted: true}
    actions: [{add_header: {name: X-Encrypted, value: "yes"}}]
  - name: unscannable
    when: {archive.unscannable: true}
    actions: [{add_header: {name: X-Unscannable, value: "yes"}}]
  - name: scannable
    when: {archive.unscannable: false}
    actions: [{add_header: {name: X-Scannable, value: "yes"}}]
"""


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory):
    return rules(tmp_path_factory.mktemp("active"), RULES)


@pytest.mark.parametrize("name, data, expected", [
    ("invoice.docm", docm(), {"macros", "scannable"}),
    ("invoice.doc", word_doc(macros=True), {"macros", "scannable"}),
    ("report.docx", docx(), {"scannable"}),
    ("report.doc", word_doc(), {"scannable"}),
    ("secret.docx", encrypted_docx(), {"encrypted", "scannable"}),
    ("secret.pdf", pdf(password="pw"), {"encrypted", "scannable"}),
    ("plain.pdf", pdf(), {"scannable"}),
    ("files.7z", sevenzip({"a.exe": EXE}, password="pw"), {"encrypted", "scannable"}),
    ("files.rar", UNOPENABLE["files.rar"], {"unscannable"}),
    ("broken.zip", CORRUPT_ZIP, {"unscannable"}),
    ("bundle.7z", sevenzip({"report.doc": word_doc()}), {"scannable"}),
    ("bundle.7z", sevenzip({"invoice.doc": word_doc(macros=True)}), {"macros", "scannable"}),
])
def test_rules_act_on_active_and_unscannable_content(ruleset, name, data, expected):
    verdict = ruleset.evaluate(inbound(), parse_message(with_attachment(name, data)))
    assert set(verdict.rules) == expected


def test_unscannable_condition_value_must_be_boolean(tmp_path):
    from imss_milter.errors import ConfigError
    with pytest.raises(ConfigError, match="archive.unscannable: expected true or false"):
        rules(tmp_path, "policies:\n  - name: p\n    when: {archive.unscannable: yes-please}\n    actions: [delete]\n")


def odt(manifest: bytes, zip_encrypt_manifest: bool = False) -> bytes:
    """An OpenDocument text file whose manifest is `manifest` (content.xml stands in for ciphertext)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", bytes(range(256)) * 8, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    if zip_encrypt_manifest:      # set the encryption flag of the manifest's local and central headers
        name = b"META-INF/manifest.xml"
        for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature)
            while at >= 0:
                name_at = at + (30 if signature == b"PK\x03\x04" else 46)
                if data[name_at:name_at + len(name)] == name:
                    data = data[:at + flag_at] + bytes([data[at + flag_at] | 1]) + data[at + flag_at + 1:]
                at = data.find(signature, at + 4)
    return data


ODF_PASSWORD = (b'<manifest:manifest><manifest:file-entry manifest:full-path="content.xml">'
                b'<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x">'
                b'<manifest:algorithm manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/>'
                b'</manifest:encryption-data></manifest:file-entry></manifest:manifest>')
ODF_OPENPGP = (b'<manifest:manifest manifest:version="1.3"><manifest:keyinfo><loext:KeyId>ABCD</loext:KeyId>'
               b'</manifest:keyinfo><manifest:file-entry manifest:full-path="encrypted-package"/></manifest:manifest>')
ODF_PLAIN = (b'<manifest:manifest><manifest:file-entry manifest:full-path="content.xml" '
             b'manifest:media-type="text/xml"/></manifest:manifest>')


@pytest.mark.parametrize("data, encrypted", [
    (odt(ODF_PASSWORD), True),
    (odt(ODF_OPENPGP), True),
    (odt(ODF_PASSWORD, zip_encrypt_manifest=True), True),
    (odt(ODF_PLAIN), False),
    (odt(ODF_PLAIN)[:-30], False),        # cut short: damaged, never an internal error
])
def test_password_protected_opendocument_is_encrypted(data, encrypted):
    """ODF encryption leaves the zip members unflagged (they hold ciphertext); only the manifest
    says so. Such a document was scanned as a plain one whose text is unreadable."""
    model = parse_message(with_attachment("secret.odt", data))
    assert not model.errors, model.errors
    part = part_named(model, "secret.odt")
    assert part.true_type == "document"
    assert part.encrypted is encrypted
    assert (FLAG_ENCRYPTED in model.flags) is encrypted
