"""File names and header values: RFC 2047, RFC 2231 and the broken forms mailers send."""

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
