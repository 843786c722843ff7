"""Document text extraction for DLP and attachment.content: each format built here, read back, and its failures."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import pytest

from imss_milter.engines.dlp import Budget, DlpEngine, extract_document
from imss_milter.engines.dlp.extract import rtf_to_text
from imss_milter.mime import parse_message
from imss_milter.mime.model import Part
from imss_milter.policy import compile_rules
from imss_milter.policy.types import Envelope

SECRET = "Card number 4111 1111 1111 1111 cvv 123"


def _zip(members: dict[str, str], first: tuple[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if first:
            archive.writestr(zipfile.ZipInfo(first[0]), first[1])    # stored, first: as ODF requires
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_docx(paragraphs: list[str]) -> bytes:
    """A minimal WordprocessingML package; each paragraph's words are split over two runs, as Word does."""
    body = "".join(
        f'<w:p><w:r><w:t xml:space="preserve">{_escape(p[: len(p) // 2])}</w:t></w:r>'
        f'<w:r><w:t xml:space="preserve">{_escape(p[len(p) // 2:])}</w:t></w:r></w:p>' for p in paragraphs)
    return _zip({
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                               'content-types"><Override PartName="/word/document.xml" ContentType="application/'
                               'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        "word/document.xml": '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                             f'wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>',
    })


def make_xlsx(rows: list[list[str]]) -> bytes:
    shared, cells = [], []
    for number, row in enumerate(rows, start=1):
        row_cells = []
        for column, value in enumerate(row):
            shared.append(value)
            row_cells.append(f'<c r="{chr(65 + column)}{number}" t="s"><v>{len(shared) - 1}</v></c>')
        cells.append(f'<row r="{number}">{"".join(row_cells)}</row>')
    strings = "".join(f"<si><t>{_escape(s)}</t></si>" for s in shared)
    return _zip({
        "[Content_Types].xml": "<Types/>",
        "xl/workbook.xml": "<workbook/>",
        "xl/sharedStrings.xml": f"<sst>{strings}</sst>",
        "xl/worksheets/sheet1.xml": f"<worksheet><sheetData>{''.join(cells)}</sheetData></worksheet>",
    })


def make_pptx(texts: list[str]) -> bytes:
    members = {"[Content_Types].xml": "<Types/>", "ppt/presentation.xml": "<p:presentation/>"}
    for number, text in enumerate(texts, start=1):
        members[f"ppt/slides/slide{number}.xml"] = f"<p:sld><a:p><a:r><a:t>{_escape(text)}</a:t></a:r></a:p></p:sld>"
    return _zip(members)


def make_odt(text: str, encrypted: bool = False) -> bytes:
    manifest = "<manifest:manifest>" + ("<manifest:encryption-data/>" if encrypted else "") + "</manifest:manifest>"
    return _zip({"content.xml": f"<office:document-content><office:body><text:p>{_escape(text)}</text:p>"
                                "</office:body></office:document-content>",
                 "META-INF/manifest.xml": manifest},
                first=("mimetype", "application/vnd.oasis.opendocument.text"))


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with Helvetica text, offsets computed so the cross-reference table is exact."""
    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def encrypted_pdf(lines: list[str]) -> bytes:
    import pypdf
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(lines))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def part(payload: bytes, name: str, true_type: str = "document") -> Part:
    return Part(path=[name], payload=payload, names=[name], true_type=true_type, is_attachment=True)


@pytest.mark.parametrize("name,payload,kind", [
    ("a.docx", make_docx(["Quarterly", SECRET]), "docx"),
    ("a.xlsx", make_xlsx([["name", "card"], ["Bob", SECRET]]), "xlsx"),
    ("a.pptx", make_pptx(["Slide one", SECRET]), "pptx"),
    ("a.odt", make_odt(SECRET), "odf"),
    ("a.pdf", make_pdf(["Statement", SECRET]), "pdf"),
    ("a.rtf", ("{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\f0 Hello\\par " + SECRET + "\\par}").encode(), "rtf"),
])
def test_each_document_type_gives_its_text(name, payload, kind):
    extraction = extract_document(part(payload, name))
    assert extraction is not None and extraction.problem is None
    assert extraction.kind == kind
    assert "4111 1111 1111 1111" in extraction.text and "cvv" in extraction.text


def test_word_runs_are_joined_without_spaces_and_paragraphs_split():
    text = extract_document(part(make_docx(["abcdef", "ghij"]), "x.docx")).text
    assert "abcdef\nghij" in text


def test_xlsx_cells_are_in_row_order():
    text = extract_document(part(make_xlsx([["a", "b"], ["c", "d"]]), "x.xlsx")).text
    assert text.splitlines()[:2] == ["a\tb", "c\td"]


def test_rtf_escapes_unicode_and_skipped_destinations():
    source = r"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Secret Font;}}{\*\generator Word;}caf\'e9 \u8364? 5\par}"
    assert rtf_to_text(source) == "café € 5\n"


@pytest.mark.parametrize("name,payload,problem", [
    ("a.pdf", encrypted_pdf([SECRET]), "encrypted"),
    ("a.odt", make_odt(SECRET, encrypted=True), "encrypted"),
    ("a.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100 + "EncryptedPackage".encode("utf-16-le"),
     "encrypted"),
    ("a.docx", make_docx([SECRET])[:200], "corrupt"),
    ("a.pdf", b"%PDF-1.4\n1 0 obj <<< garbage", "corrupt"),
    ("a.pdf", b"MZ\x90\x00 not a pdf at all", "corrupt"),
])
def test_unreadable_documents_say_why(name, payload, problem):
    extraction = extract_document(part(payload, name))
    assert extraction is not None and extraction.problem is not None
    assert extraction.problem.startswith(problem)
    assert "4111" not in extraction.text


def test_budgets_bound_the_work():
    big = make_docx([SECRET] * 2000)
    assert extract_document(part(big, "a.docx"), Budget(max_document_bytes=1000)).problem.startswith("too large")
    assert extract_document(part(big, "a.docx"), Budget(max_expanded_bytes=1000)).problem == \
        "expanded size over the budget"
    assert extract_document(part(big, "a.docx"), deadline=0).problem == "time budget exceeded"
    assert len(extract_document(part(big, "a.docx"), Budget(max_chars=100)).text) == 100


def test_plain_zip_holding_a_document_is_not_a_document():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner/cards.docx", make_docx([SECRET]))
    assert extract_document(part(buffer.getvalue(), "bundle.zip", "archive")) is None


def test_plain_text_is_not_a_document():
    assert extract_document(part(b"hello 4111", "a.txt", "text")) is None
    utf16 = "\ufeffCard 4111 1111 1111 1111".encode("utf-16-le")
    assert "4111 1111" in extract_document(part(utf16, "a.csv", "text")).text


RULES = """\
dlp:
  identifiers:
    unreadable: {type: file, name: ["*.nothing"]}
  templates:
    unscannable: {identifier: unreadable-document}
policies:
  - name: cards
    when: {dlp: [pci-dss, unscannable]}
    actions: [{quarantine: {area: dlp}}]
  - name: word
    when: {attachment.content: {keywords: ["quarterly figures"]}}
    actions: [{add_header: {name: X-Word, value: seen}}]
"""


def scan(attachments: list[tuple[str, bytes, str]], body: str = "see attached"):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@partner.test", "docs"
    msg.set_content(body)
    for name, data, subtype in attachments:
        msg.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    ruleset = compile_rules([("/r/50.yaml", RULES)])
    return ruleset.evaluate(Envelope("a@example.com", ["b@partner.test"]), parse_message(msg.as_bytes()),
                            {"dlp": DlpEngine().for_rules(ruleset)})


CARDS = "\n".join(["4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005", "6011 1111 1111 1117",
                   "3530 1113 3330 0000"])


@pytest.mark.parametrize("name,data,subtype", [
    ("cards.docx", make_docx(CARDS.splitlines()), "vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("cards.pdf", make_pdf(CARDS.splitlines()), "pdf"),
    ("cards.csv", ("name,card\n" + "\n".join(f"x,{c}" for c in CARDS.splitlines())).encode("utf-8"), "octet-stream"),
    ("cards.html", f"<html><body><p>{'</p><p>'.join(CARDS.splitlines())}</p></body></html>".encode(), "octet-stream"),
])
def test_cards_in_documents_are_found_through_the_message(name, data, subtype):
    verdict = scan([(name, data, subtype)])
    assert verdict.action == "quarantine"
    [finding] = [f for f in verdict.findings if f.get("template") == "pci-dss"]
    assert finding["path"] == [name] and finding["identifiers"] == {"credit-card": 5}


def test_cards_in_a_docx_inside_a_zip():
    buffer = io.BytesIO()
    # deflated: the MIME layer takes a zip that STORES a docx for the docx itself (reported to its owner)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner/cards.docx", make_docx(CARDS.splitlines()))
    verdict = scan([("bundle.zip", buffer.getvalue(), "zip")])
    [finding] = [f for f in verdict.findings if f.get("template") == "pci-dss"]
    assert finding["path"][0] == "bundle.zip" and finding["path"][-1].endswith("cards.docx")


def test_unreadable_document_is_a_finding_an_admin_template_can_use():
    verdict = scan([("statement.pdf", encrypted_pdf([CARDS]), "pdf")])
    assert verdict.action == "quarantine"
    [finding] = [f for f in verdict.findings if f.get("template") == "unscannable"]
    assert finding["values"]["unreadable-document"] == ["pdf: encrypted"]


def test_attachment_content_sees_document_text():
    verdict = scan([("report.docx", make_docx(["The quarterly figures"]),
                     "vnd.openxmlformats-officedocument.wordprocessingml.document")])
    assert "word" in verdict.rules
