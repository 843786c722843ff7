"""Transfer encodings and charsets decoded as leniently as mail clients do,
and the text that keyword conditions search."""

import base64

import pytest

from imss_milter.mime import html_to_text, parse_message
from imss_milter.mime.charsets import decode_bytes
from imss_milter.mime.transfer import decode_base64, normalise_cte

SECRET = b"The quick brown fox jumps over the lazy dog. 0123456789!"


def single_part(headers: str, body: bytes) -> bytes:
    return (b"From: a@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
            + headers.encode() + b"\r\n\r\n" + body)


def attachment(cte_header: str, body: bytes) -> bytes:
    return single_part('Content-Type: application/octet-stream; name="f.bin"\r\n'
                       f"Content-Transfer-Encoding: {cte_header}", body)


def payload_of(raw: bytes) -> bytes:
    model = parse_message(raw)
    assert len(model.parts) == 1
    return model.parts[0].payload


def test_clean_base64_with_line_breaks():
    encoded = base64.encodebytes(SECRET * 20)
    assert payload_of(attachment("base64", encoded)) == SECRET * 20


def test_base64_with_junk_characters_and_odd_whitespace():
    encoded = base64.b64encode(SECRET).decode()
    junked = "!!" + encoded[:10] + " *\t" + encoded[10:30] + "\r\n\r\n  ~" + encoded[30:] + "$$\r\n"
    model = parse_message(attachment("base64", junked.encode()))
    assert model.parts[0].payload == SECRET
    assert "malformed" in model.flags


def test_base64_missing_padding():
    encoded = base64.b64encode(SECRET[:-1]).rstrip(b"=")
    assert payload_of(attachment("base64", encoded)) == SECRET[:-1]


def test_base64_padding_in_the_middle_decodes_both_halves():
    first, second = base64.b64encode(b"first half!"), base64.b64encode(b"second half")
    assert first.endswith(b"=")
    assert decode_base64(first + b"\r\n" + second)[0] == b"first half!second half"
    assert payload_of(attachment("base64", first + b"\r\n" + second)) == b"first half!second half"


def test_base64_extra_padding_is_ignored():
    assert decode_base64(base64.b64encode(SECRET) + b"====")[0] == SECRET


@pytest.mark.parametrize("value", ["BASE64", "Base64 ; x", '"base64"', " base64 (comment)", "x-base64"])
def test_odd_cte_values_still_mean_base64(value):
    assert normalise_cte(value) == "base64"
    assert payload_of(attachment(value, base64.encodebytes(SECRET))) == SECRET


def test_quoted_printable_soft_breaks_and_escapes():
    body = b"caf=C3=A9 is=\r\n good=3D=\nyes\r\n"
    raw = single_part("Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: Quoted-Printable", body)
    model = parse_message(raw)
    assert model.body_text == "café is good=yes"


def test_cte_uuencode_body():
    import binascii
    lines = b"".join(binascii.b2a_uu(SECRET[i:i + 45]) for i in range(0, len(SECRET), 45))
    body = b"begin 644 f.bin\n" + lines + b"`\nend\n"
    assert payload_of(attachment("x-uuencode", body)) == SECRET


def test_body_in_declared_charset():
    raw = single_part("Content-Type: text/plain; charset=iso-8859-2", "Zażółć".encode("iso-8859-2"))
    assert parse_message(raw).body_text == "Zażółć"


def test_utf7_body():
    raw = single_part('Content-Type: text/plain; charset="UTF-7"', "Grüße €".encode("utf-7"))
    assert parse_message(raw).body_text == "Grüße €"


def test_unknown_charset_falls_back_to_utf8_then_latin1():
    assert decode_bytes("naïve".encode("utf-8"), "x-bogus") == "naïve"
    assert decode_bytes("naïve".encode("latin-1"), "x-bogus") == "naïve"
    # Declared ASCII that is really UTF-8.
    raw = single_part("Content-Type: text/plain; charset=us-ascii", "prix: 5€".encode())
    assert parse_message(raw).body_text == "prix: 5€"


def test_html_body_becomes_text():
    markup = ("<html><head><title>t</title><style>p {color:red}</style></head><body>"
              "<script>var hidden = 'no';</script><p>Free&nbsp;&amp;   easy</p>"
              "<div>pr<b>iz</b>e&#33;</div><!-- comment --></body></html>")
    raw = single_part("Content-Type: text/html; charset=utf-8", markup.encode())
    model = parse_message(raw)
    assert model.body_text == "Free & easy prize!"
    assert model.parts[0].is_text_body and not model.parts[0].is_attachment
    assert model.parts[0].true_type == "html"


def test_whitespace_normalised_and_invisible_characters_removed():
    assert html_to_text("a\u00a0\u00a0b\t\r\n c\u200bd") == "a b cd"
    raw = single_part("Content-Type: text/plain; charset=utf-8", "one\r\n\r\n   two\t\tthree".encode())
    assert parse_message(raw).body_text == "one two three"


def test_message_without_mime_headers_is_a_text_body():
    model = parse_message(b"From: a@b\r\nSubject: x\r\n\r\nJust   text.\r\n")
    assert model.body_text == "Just text."
    assert model.parts[0].is_text_body
    assert model.attachments == []


def test_a_tag_never_closed_hides_the_rest_as_browsers_do():
    # a browser treats everything after an unclosed "<a" as attributes: nothing of it is shown
    assert html_to_text("<p>shown</p><a href='x' title=hidden text") == "shown"
    assert html_to_text("<p>shown<script>var x = 1;") == "shown"
    # ">"-less tag runs end at the end of the text in one step each (thousands of them must stay linear)
    assert html_to_text("before " + "<a href=" * 2000) == "before"
    # a "<" that starts no tag is text
    assert html_to_text("<p>1 < 2 and 3 > 2</p>") == "1 < 2 and 3 > 2"
