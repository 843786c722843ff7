"""Bad input never crashes the parser, and big input stays fast."""

import base64
import io
import os
import random
import struct
import zipfile

from imss_milter.mime import TRUE_TYPE_CATEGORIES, MessageModel, parse_message

EXE = b"MZ" + b"\x00" * 0x3A + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 100


def sample_messages() -> list[bytes]:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.exe", EXE)
        z.writestr("b.txt", b"hello " * 50)
    nested = (b"From: x@y\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n"
              b"--in\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--in--\r\n")
    return [
        b"From: a@b\r\nSubject: =?utf-8?B?aGk=?=\r\n\r\nplain body\r\n",
        (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n"
         b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"caf=C3=A9 =\r\nbar\r\n--zz\r\nContent-Type: application/zip; name*=UTF-8''%E2%82%AC.zip\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(zipped.getvalue())
         + b"--zz\r\nContent-Type: message/rfc822\r\n\r\n" + nested + b"\r\n--zz\r\n"
         b"Content-Type: text/plain\r\n\r\nbegin 644 t.bin\r\n#86)C\r\n`\r\nend\r\n--zz--\r\n"),
    ]


MIME_TOKENS = [b"--zz\r\n", b"--zz--", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=zz\r\n",
               b"=?utf-8?B?", b"?=", b"begin 644 x\r\n", b"PK\x03\x04", b"\x1f\x8b", b"\"", b";", b"\x00",
               b"Content-Transfer-Encoding: base64\r\n", b"name*0*=", b"%", b"\xff\xfe", b"<script>"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        pos = rng.randrange(len(data) + 1)
        if choice < 0.25 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.45:
            del data[pos:pos + rng.randint(1, 40)]
        elif choice < 0.75:
            data[pos:pos] = rng.choice(MIME_TOKENS)
        elif choice < 0.85:
            data = data[:pos]      # truncation
        else:
            start = rng.randrange(len(data) + 1)
            data[pos:pos] = data[start:start + rng.randint(1, 200)]    # duplication
    return bytes(data)


def check_model(model, raw):
    assert isinstance(model, MessageModel)
    assert model.raw_size == len(raw)
    for part in model.parts:
        assert part.true_type in TRUE_TYPE_CATEGORIES
        assert isinstance(part.payload, bytes)
        assert all(isinstance(n, str) for n in part.names)
    assert isinstance(model.body_text, str)
    # parse_message catches its own bugs as a last resort; none may be hit.
    assert not [n for n in model.notes if n.startswith(("parser error", "structure too deeply"))], model.notes
    # Corrupt input is never mistaken for an internal failure (which tempfails).
    assert not model.errors, model.errors


def test_mutated_and_truncated_messages_never_raise():
    rng = random.Random(20240601)
    samples = sample_messages()
    for round_number in range(400):
        raw = mutate(rng.choice(samples), rng)
        check_model(parse_message(raw), raw)


def test_random_bytes_and_odd_inputs_never_raise():
    rng = random.Random(7)
    for size in (0, 1, 2, 10, 100, 1000, 5000):
        for _ in range(5):
            raw = bytes(rng.randrange(256) for _ in range(size))
            check_model(parse_message(raw), raw)
    for raw in (b"\r\n" * 1000, b":" * 5000, b"From \r\n", b"a: b\r\n" * 3000,
                b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
                b"Content-Type: multipart/mixed; boundary=\"\r\n\r\n--\"\r\n"):
        check_model(parse_message(raw), raw)


def test_pathological_nesting_is_bounded():
    body = b"x"
    for level in range(3000):
        body = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + body + b"\r\n--b--\r\n"
    model = parse_message(b"From: a@b\r\n" + body)
    assert "malformed" in model.flags
    eml = b"From: a@b\r\nSubject: s\r\n\r\nend"
    for level in range(500):
        eml = b"From: a@b\r\nSubject: s\r\nContent-Type: message/rfc822\r\n\r\n" + eml
    model = parse_message(eml)
    assert "malformed" in model.flags


def test_many_boundaries_bounded():
    raw = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + b"--z\r\n\r\nx\r\n" * 20000
    model = parse_message(raw)
    assert len(model.parts) <= 1000


def typical_100k_message() -> bytes:
    rng = random.Random(3)
    words = ["invoice", "payment", "meeting", "report", "please", "thanks", "the", "and", "for", "deadline"]
    text = " ".join(rng.choice(words) for _ in range(4000)).encode()
    html = ("<html><body><table>" + "".join(
        f"<tr><td style='color:red'>{rng.choice(words)}</td><td><b>{rng.choice(words)}</b></td></tr>"
        for _ in range(500)) + "</table></body></html>").encode()
    pdf = b"%PDF-1.4\n" + os.urandom(30000)
    return (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: multipart/alternative; boundary=yy\r\n\r\n--yy\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n--yy\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html + b"\r\n--yy--\r\n--zz\r\n"
            b'Content-Type: application/pdf; name="r.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + base64.encodebytes(pdf) + b"--zz--\r\n")


def test_typical_100k_message_parts():
    # its parse time is measured by bench/scan_bench.py
    raw = typical_100k_message()
    assert 90_000 < len(raw) < 130_000
    model = parse_message(raw)
    assert [p.true_type for p in model.parts] == ["text", "html", "pdf"]


def test_10mb_attachment_is_fine():
    data = os.urandom(10 * 1024 * 1024)
    raw = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
           b'Content-Type: application/octet-stream; name="big.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + base64.encodebytes(data) + b"--zz--\r\n")
    model = parse_message(raw)
    assert model.parts[0].payload == data
    assert not model.flags
