"""File names and header values: RFC 2047, RFC 2231 and the broken forms mailers send."""

import pytest

from imss_milter.mime import parse_message
from imss_milter.mime.headers import decode_rfc2047, parse_structured


def one_attachment(part_headers: str) -> bytes:
    """A multipart message whose second part carries the given headers."""
    return (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        f"--b1\r\n{part_headers}\r\n\r\nfile content\r\n--b1--\r\n"
    ).encode("utf-8")


def names_of(part_headers: str) -> list[str]:
    model = parse_message(one_attachment(part_headers))
    files = [p for p in model.parts if p.is_attachment]
    assert len(files) == 1, [p.path for p in model.parts]
    return files[0].names


def test_disposition_filename_and_content_type_name_both_kept():
    names = names_of('Content-Type: application/octet-stream; name="report.pdf"\r\n'
                     'Content-Disposition: attachment; filename="report.pdf.exe"')
    assert set(names) == {"report.pdf.exe", "report.pdf"}
    assert names[0] == "report.pdf.exe"     # Content-Disposition wins for display


def test_rfc2231_charset_and_language():
    names = names_of("Content-Type: application/octet-stream\r\n"
                     "Content-Disposition: attachment; filename*=UTF-8'en'%E2%82%AC%20rates.exe")
    assert names == ["€ rates.exe"]


def test_rfc2231_continuations_mixed_encoded_and_plain():
    names = names_of("Content-Type: application/octet-stream\r\n"
                     "Content-Disposition: attachment;\r\n"
                     " filename*0*=iso-8859-1''%E9t%E9_;\r\n"
                     ' filename*1="invoice";\r\n'
                     " filename*2*=%2Ejs")
    assert "été_invoice.js" in names


def test_rfc2047_inside_quoted_parameter():
    names = names_of('Content-Type: application/octet-stream; name="=?utf-8?B?c2NoYWRlLmV4ZQ==?="')
    assert names == ["schade.exe"]


def test_rfc2047_split_words_in_parameter():
    names = names_of('Content-Disposition: attachment; filename="=?utf-8?Q?Rechnung_?=\r\n'
                     ' =?utf-8?Q?M=C3=A4rz.scr?="')
    assert names == ["Rechnung März.scr"]


def test_missing_close_quote_gives_both_readings():
    names = names_of('Content-Type: application/octet-stream; name="evil.exe; x=1\r\n'
                     "Content-Disposition: attachment")
    assert "evil.exe" in names
    assert "evil.exe; x=1" in names


def test_unquoted_name_with_spaces_and_whitespace_trimmed():
    names = names_of("Content-Disposition: attachment; filename=  my holiday photo.jpg.exe   ")
    assert names == ["my holiday photo.jpg.exe"]


def test_path_in_name_yields_basename_too():
    names = names_of('Content-Disposition: attachment; filename="C:\\Temp\\run.exe"')
    assert "run.exe" in names


def test_rfc2047_subject_decoding_incl_utf7_and_malformed_words():
    assert decode_rfc2047(b"=?utf-8?B?SGVsbG8=?= =?utf-8?B?IFdvcmxk?=") == "Hello World"
    assert decode_rfc2047(b"=?UTF-7?Q?+AOQ-rger?=") == "ärger"
    # Missing padding and a missing closing ?= still decode.
    assert decode_rfc2047(b"=?utf-8?B?SGVsbG8") == "Hello"
    # A multi-byte character split across two words.
    euro = "€".encode("utf-8")
    first = "=?utf-8?Q?" + "".join(f"={b:02X}" for b in euro[:2]) + "?="
    second = "=?utf-8?Q?" + "".join(f"={b:02X}" for b in euro[2:]) + "?="
    assert decode_rfc2047(f"{first} {second}".encode()) == "€"
    # Unknown charset falls back rather than failing.
    assert decode_rfc2047(b"=?x-unknown?Q?caf=C3=A9?=") == "café"


def test_message_subject_and_headers_decoded():
    raw = (b"From: =?iso-8859-1?Q?J=FCrgen?= <j@example.com>\r\n"
           b"Subject: =?utf-8?B?w5xiZXJ3ZWlzdW5n?=\r\nX-Note: plain\r\n\r\nhi\r\n")
    model = parse_message(raw)
    assert model.subject == "Überweisung"
    assert model.header_values("from") == ["Jürgen <j@example.com>"]
    assert model.header_values("X-NOTE") == ["plain"]


def test_parse_structured_keeps_every_parameter_value():
    header = parse_structured(b'Attachment; filename="a.txt"; filename=b.exe')
    assert header.value == "attachment"
    assert header.get_all("filename") == ["a.txt", "b.exe"]
    assert set(names_of('Content-Disposition: attachment; filename="a.txt"; filename=b.exe')) == {"a.txt", "b.exe"}


def zip_named(name: bytes) -> bytes:
    """A zip whose one member (a PE file) has exactly these name bytes in both its headers."""
    import io
    import zipfile

    placeholder = b"N" * len(name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(placeholder.decode(), b"MZ\x90\x00" + b"\x00" * 200)
    return buffer.getvalue().replace(placeholder, name)


@pytest.mark.parametrize("raw_name, wanted", [
    (b"evil.exe\x00.txt", "evil.exe"),             # C-string readers stop at the NUL
    (b"\x00evil.exe....", "evil.exe...."),         # empty up to the NUL: made zipfile's is_dir() raise
    (b"\x00\x00\x00\x00", None),                   # nothing but NULs
])
def test_names_with_nul_are_read_as_tools_read_them(raw_name, wanted):
    """A NUL in a file name is read two ways by tools: up to the NUL, or with the NULs dropped.
    Both are candidates, in zip members, MIME parameters and uuencoded names, and no such name
    is an internal error (which tempfailed the message on every retry)."""
    import base64

    zipped = base64.encodebytes(zip_named(raw_name)).replace(b"\n", b"\r\n")
    model = parse_message(
        b"From: a@example.com\r\nSubject: zip\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: application/zip\r\n"
        b"Content-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + zipped + b"--b1--\r\n")
    assert not model.errors, model.errors
    [member] = [part for part in model.parts if part.origin == "archive"]
    assert member.true_type == "executable"
    if wanted:
        assert wanted in member.names
        assert raw_name.replace(b"\x00", b"").decode() in member.names
    names = names_of('Content-Type: application/octet-stream\r\nContent-Disposition: attachment; '
                     'filename="' + raw_name.decode() + '"')
    if wanted:
        assert wanted in names and raw_name.replace(b"\x00", b"").decode() in names
    uu = parse_message(b"From: a@example.org\r\nSubject: uu\r\n\r\nbody\r\nbegin 644 " + raw_name
                       + b"\r\n#35IM\r\n`\r\nend\r\n")
    assert not uu.errors
    [encoded] = [part for part in uu.parts if part.origin == "uuencode"]
    if wanted:
        assert wanted in encoded.names
