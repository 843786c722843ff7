"""A zip-based document is a zip: whatever else it carries is scanned like an archive member."""

from __future__ import annotations

import io
import struct
import zipfile

from imss_milter.mime import parse_message


def pe() -> bytes:
    image = bytearray(512)
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, 0x80)
    image[0x80:0x84] = b"PE\0\0"
    return bytes(image)


def docx(extra: dict[str, bytes] | None = None, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", "<w:document><w:body>Card 4111 1111 1111 1111</w:body></w:document>")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def message_with(name: str, payload: bytes, content_type="application/zip") -> bytes:
    import base64
    body = base64.encodebytes(payload).decode()
    return (f'From: a@example.org\r\nTo: b@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n'
            f'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
            f'--b\r\nContent-Type: {content_type}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f'{body}\r\n--b--\r\n').encode()


def test_an_executable_stored_in_a_zip_that_also_holds_content_types_is_found():
    # stored (not compressed): the container's bytes contain "[Content_Types].xml" and "word/"
    model = parse_message(message_with("bundle.zip", docx({"setup.exe": pe()}, zipfile.ZIP_STORED)))
    kinds = {tuple(p.path): p.true_type for p in model.attachments}
    assert kinds[("bundle.zip", "setup.exe")] == "executable"


def test_an_executable_inside_a_real_docx_is_found():
    model = parse_message(message_with("report.docx", docx({"word/embeddings/run.exe": pe()}),
                                       "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
    top = [p for p in model.attachments if p.path == ["report.docx"]][0]
    assert top.true_type == "document"
    inner = [p for p in model.attachments if p.path == ["report.docx", "word/embeddings/run.exe"]][0]
    assert inner.true_type == "executable" and inner.inside_document


def test_members_of_a_document_are_marked_so_their_words_are_not_read_twice():
    model = parse_message(message_with("report.docx", docx()))
    members = [p for p in model.attachments if len(p.path) == 2]
    assert members and all(p.inside_document for p in members)
