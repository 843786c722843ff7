"""Internal failures are not malformed input, and limits that cut scanning are flagged.

A message the scanner could not finish must never look like a clean (or
merely malformed) one: internal failures go to MessageModel.errors (the
milter tempfails), and MIME limits set archive.limit_exceeded (the shipped
rules quarantine it).
"""

import base64
import binascii
import io
import random
import struct
import tarfile
import zipfile

import pytest

from imss_milter.mime import FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED, Limits, archives, charsets, parse_message, truetype
from imss_milter.mime import parser as mime_parser

EXE = b"MZ" + b"\x00" * 0x3A + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 100
HEAD = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def exe_part(name: str = "a.exe") -> bytes:
    return (f'Content-Type: application/octet-stream; name="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(EXE)


def with_attachment(name: str, data: bytes) -> bytes:
    return HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                   b"Content-Type: text/plain\r\n\r\nsee attached\r\n--zz\r\n"
                   + f'Content-Type: application/octet-stream; name="{name}"\r\n'.encode()
                   + b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(data) + b"--zz--\r\n")


def zip_of(members: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def tar_of(members: dict, mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def exe_names(model) -> set[str]:
    return {p.name for p in model.parts if p.true_type == "executable"}


# --- internal failures -----------------------------------------------------------

def test_codec_failure_reading_zip_names_is_an_error_not_malformed(monkeypatch):
    # What a privilege drop can do: cp437 (zip names) no longer imports.
    def broken_names(raw, utf8_flag):
        raise LookupError("unknown encoding: cp437")
    monkeypatch.setattr(archives, "_zip_names", broken_names)
    model = parse_message(with_attachment("a.zip", zip_of({"setup.exe": EXE})))
    assert model.errors, model.notes
    assert "LookupError" in model.errors[0] and "a.zip" in model.errors[0]
    assert "archives.py" in model.errors[0]      # where it happened
    assert FLAG_MALFORMED not in model.flags


@pytest.mark.parametrize("error", [TypeError("bug"), AttributeError("bug"), KeyError("bug"),
                                   MemoryError(), ImportError("no module")])
def test_scanner_bug_in_true_type_is_an_error(monkeypatch, error):
    real_check = truetype._check_pe

    def broken(payload):
        if payload.startswith(b"MZ"):
            raise error
        return real_check(payload)
    monkeypatch.setattr(truetype, "_check_pe", broken)
    model = parse_message(with_attachment("a.exe", EXE))
    assert any(type(error).__name__ in e for e in model.errors), (model.errors, model.notes)
    # The text part before it was still scanned.
    assert "see attached" in model.body_text


def test_failure_in_text_decoding_is_an_error(monkeypatch):
    def broken(data, charset=None):
        raise LookupError("unknown encoding: cp1252")
    monkeypatch.setattr(mime_parser, "decode_bytes", broken)
    model = parse_message(HEAD + b"Content-Type: text/plain; charset=windows-1252\r\n\r\nhello\r\n")
    assert model.errors and "LookupError" in model.errors[0]


def test_failure_in_header_reading_is_an_error(monkeypatch):
    def broken(data, start=0):
        raise NameError("name 'x' is not defined")
    monkeypatch.setattr(mime_parser, "read_header_blocks", broken)
    model = parse_message(HEAD + b"\r\nbody\r\n")
    assert model.errors and "NameError" in model.errors[0]


def test_codec_python_ships_but_cannot_load_is_an_error(monkeypatch):
    import codecs

    real_lookup = codecs.lookup

    def lookup(name):
        if name.lower().replace("-", "_") in ("koi8_r",):
            raise LookupError(f"unknown encoding: {name}")
        return real_lookup(name)
    monkeypatch.setattr(codecs, "lookup", lookup)
    charsets.normalise_charset.cache_clear()
    try:
        model = parse_message(HEAD + b"Content-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\r\n")
    finally:
        charsets.normalise_charset.cache_clear()
    assert model.errors and "LookupError" in model.errors[0]


def test_odd_charsets_named_by_the_mail_are_not_errors():
    # Names Python does not know, knows only on Windows, or knows as
    # bytes-to-bytes codecs: all the sender's doing, never tempfail.
    for charset in ("x-no-such-charset", "mbcs", "base64", "rot13", "hex", "aliases", "__init__", "utf-7"):
        model = parse_message(HEAD + f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode()
                              + b"caf\xe9 +AGEA- =?x?= \r\n")
        assert not model.errors, (charset, model.errors)
        assert "caf" in model.body_text


def test_charset_names_that_only_resemble_a_real_one_are_unknown_not_errors():
    # Python's own name normalisation drops what is not an ASCII letter or digit, so "utéf-8"
    # looked like a shipped codec (utf_8) that failed to load: the message was tempfailed on
    # every retry. Such names are the sender's junk, in a body charset and in RFC 2231 names.
    for charset in ("ut\u00e9f-8", "k\u00f6i8-r", "l\u00e4tin-1", "\u00fctf-8", "utf\u00a08", "koi8\u2011r"):
        charsets.normalise_charset.cache_clear()
        declared = charset.encode("utf-8")
        model = parse_message(HEAD + b"Content-Type: text/plain; charset=" + declared + b"\r\n\r\ncaf\xe9\r\n")
        assert not model.errors, (charset, model.errors)
        assert "caf" in model.body_text
        model = parse_message(
            HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename*=" + declared + b"''x%2Eexe\r\n\r\nMZ\r\n--B--\r\n")
        assert not model.errors, (charset, model.errors)
        assert "x.exe" in [name for part in model.parts for name in part.names], charset


def test_non_bytes_input_is_an_error_not_a_crash():
    model = parse_message(12.5)
    assert model.errors and "TypeError" in model.errors[0]


def mutated(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not data:
            break
        pos = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.6:
            data[pos] = rng.randrange(256)
        elif choice < 0.85:
            del data[pos:pos + rng.randint(1, 20)]
        else:
            data = data[:max(pos, 6)]
    return bytes(data)


def test_corrupt_archives_are_malformed_never_errors():
    rng = random.Random(99)
    seeds = [zip_of({"a.exe": EXE, "dir/b.txt": b"hello " * 100}),
             tar_of({"a.exe": EXE, "b.txt": b"hi" * 600}),
             tar_of({"a.exe": EXE}, "w:gz"), tar_of({"a.exe": EXE}, "w:bz2"), tar_of({"a.exe": EXE}, "w:xz")]
    malformed = 0
    for round_number in range(400):
        payload = mutated(rng.choice(seeds), rng)
        model = parse_message(with_attachment("x.zip", payload))
        assert not model.errors, (round_number, model.errors)
        malformed += FLAG_MALFORMED in model.flags
    assert malformed > 50      # the mutations did damage the archives


# --- MIME limits cut scanning → archive.limit_exceeded ---------------------------------

def nested(body: bytes, levels: int) -> bytes:
    for level in range(levels):
        body = (f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n").encode() \
            + body + f"\r\n--b{level}--\r\n".encode()
    return body


def test_exe_below_the_mime_depth_limit_sets_limit_flag():
    at_limit = parse_message(HEAD + nested(exe_part("deep.exe"), 20))
    assert "deep.exe" in exe_names(at_limit)
    assert FLAG_ARCHIVE_LIMIT not in at_limit.flags
    too_deep = parse_message(HEAD + nested(exe_part("deep.exe"), 21))
    assert "deep.exe" not in exe_names(too_deep)
    assert {FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED} <= too_deep.flags
    assert any("max_mime_depth" in n for n in too_deep.notes)


def test_messages_nested_too_deep_set_limit_flag():
    eml = HEAD + b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n" + exe_part("x.exe") + b"--in--\r\n"
    for _ in range(25):
        eml = HEAD + b"Content-Type: message/rfc822\r\n\r\n" + eml
    model = parse_message(eml)
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert any("deeper than 20" in n for n in model.notes)


def test_exe_after_1005_text_parts_sets_limit_flag():
    body = b"".join(b"--zz\r\nContent-Type: text/plain\r\n\r\nfiller %d\r\n" % i for i in range(1005))
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n" + body + b"--zz\r\n" \
        + exe_part("late.exe") + b"--zz--\r\n"
    model = parse_message(raw)
    assert "late.exe" not in exe_names(model)
    assert {FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED} <= model.flags
    assert any("max_parts" in n or "more than 1000 parts" in n for n in model.notes)


def test_part_limit_inside_mime_sets_limit_flag_with_small_limit():
    body = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n" + b"".join(
        b"--zz\r\n" + exe_part(f"f{i}.exe") for i in range(50)) + b"--zz--\r\n"
    model = parse_message(HEAD + body, Limits(max_parts=20))
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert any("more than 20 parts" in n for n in model.notes)


def test_too_many_uuencoded_files_sets_limit_flag():
    uu = b"".join(binascii.b2a_uu(EXE[i:i + 45]) for i in range(0, len(EXE), 45))
    blocks = b"".join(b"begin 644 f%d.txt\n#86)C\n`\nend\n" % i for i in range(100))
    raw = HEAD + b"Content-Type: text/plain\r\n\r\n" + blocks + b"begin 644 last.exe\n" + uu + b"`\nend\n"
    model = parse_message(raw)
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert any("uuencoded" in n for n in model.notes)


def test_limits_not_reached_leave_no_flag():
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n" + b"".join(
        b"--zz\r\nContent-Type: text/plain\r\n\r\nfiller %d\r\n" % i for i in range(900)) + b"--zz--\r\n"
    assert not parse_message(raw).flags


# --- Content-Transfer-Encoding on a multipart ----------------------------------------

def test_base64_encoded_multipart_scanned_both_ways():
    inner = (b"--in\r\nContent-Type: text/plain\r\n\r\nhello there\r\n--in\r\n" + exe_part("hidden.exe")
             + b"--in--\r\n")
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=in\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.encodebytes(inner))
    model = parse_message(raw)
    hidden = [p for p in model.parts if p.name == "hidden.exe"]
    assert hidden and hidden[0].payload == EXE and hidden[0].true_type == "executable"
    assert "hello there" in model.body_text
    assert FLAG_MALFORMED in model.flags
    assert any("on a multipart" in n for n in model.notes)


def test_encoded_multipart_as_is_reading_still_scanned():
    # The body is a readable multipart although the header claims
    # quoted-printable: readers that ignore the CTE see it as is.
    body = b"--zz\r\n" + exe_part("plain.exe") + b"--zz--\r\n"
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + body
    model = parse_message(raw)
    assert "plain.exe" in exe_names(model)
    assert FLAG_MALFORMED in model.flags


def test_seven_bit_multipart_is_clean():
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                  b"--zz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--zz--\r\n")
    assert not parse_message(raw).flags


# --- uuencode in HTML bodies -------------------------------------------------------------

def uu_lines(data: bytes) -> bytes:
    return b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))


def test_uuencoded_file_in_html_source_lines():
    body = b"<html><body><p>See below.</p>\r\nbegin 644 tool.exe\r\n" + uu_lines(EXE).replace(b"\n", b"\r\n") \
        + b"`\r\nend\r\n<p>Bye</p></body></html>\r\n"
    model = parse_message(HEAD + b"Content-Type: text/html\r\n\r\n" + body)
    uu = [p for p in model.parts if p.origin == "uuencode"]
    assert len(uu) == 1 and uu[0].names == ["tool.exe"] and uu[0].payload == EXE
    assert uu[0].true_type == "executable"
    assert "See below." in model.body_text


def test_uuencoded_file_shown_by_html_markup_and_entities():
    # One source line; <br> makes the lines a client shows, and the
    # uuencode characters & < > " are written as entities.
    import html
    shown = [b"begin 644 hidden.exe"] + uu_lines(EXE).splitlines() + [b"`", b"end"]
    source = b"<div>" + b"<br>".join(html.escape(line.decode("latin-1")).encode() for line in shown) + b"</div>"
    raw = HEAD + b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(
        b"<html><body>" + source + b"</body></html>")
    model = parse_message(raw)
    uu = [p for p in model.parts if p.origin == "uuencode"]
    assert len(uu) == 1 and uu[0].names == ["hidden.exe"] and uu[0].payload == EXE


def test_ordinary_html_has_no_uuencoded_file():
    model = parse_message(HEAD + b"Content-Type: text/html\r\n\r\n<p>We begin at 9 &amp; end at 5.</p>"
                          b"<p>begin</p><p>end</p>\r\n")
    assert [p.origin for p in model.parts] == ["mime"]
    assert model.body_text == "We begin at 9 & end at 5. begin end"
