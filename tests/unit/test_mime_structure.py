"""MIME structure: nesting, uuencode, and ambiguous structure read every plausible way."""

import base64
import binascii
import struct

from imss_milter.mime import Limits, parse_message

EXE = b"MZ" + b"\x00" * 0x3A + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 100
EXE_B64 = base64.encodebytes(EXE)


def exe_part(name: str = "a.exe") -> bytes:
    return (f'Content-Type: application/octet-stream; name="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + EXE_B64


def names(model) -> set[str]:
    return {n for p in model.parts for n in p.names}


HEAD = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def test_nested_message_rfc822_parts_get_outer_path():
    inner = HEAD + (b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n"
                    b"Content-Type: text/plain\r\n\r\ninner words\r\n--in\r\n" + exe_part("inner.exe")
                    + b"--in--\r\n")
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n"
                  b"Content-Type: text/plain\r\n\r\nouter words\r\n--out\r\n"
                  b'Content-Type: message/rfc822; name="fwd.eml"\r\n\r\n' + inner + b"\r\n--out--\r\n")
    model = parse_message(raw)
    paths = {tuple(p.path): p for p in model.parts}
    assert paths[("fwd.eml",)].true_type == "email"
    inner_exe = paths[("fwd.eml", "inner.exe")]
    assert inner_exe.origin == "message" and inner_exe.true_type == "executable"
    assert "outer words" in model.body_text and "inner words" in model.body_text


def test_base64_encoded_message_rfc822():
    inner = HEAD + b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n" + exe_part("b.exe") + b"--in--\r\n"
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n"
                  b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.encodebytes(inner) + b"--out--\r\n")
    model = parse_message(raw)
    assert any(p.path[-1] == "b.exe" and p.true_type == "executable" and len(p.path) == 2 for p in model.parts)


def test_eml_attached_as_octet_stream_is_parsed():
    inner = HEAD + b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n" + exe_part("c.exe") + b"--in--\r\n"
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n"
                  b'Content-Type: application/octet-stream; name="mail.eml"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(inner) + b"--out--\r\n")
    paths = {tuple(p.path): p for p in parse_message(raw).parts}
    assert paths[("mail.eml",)].true_type == "email"
    assert paths[("mail.eml", "c.exe")].true_type == "executable"


def test_inline_uuencoded_file_in_text_body():
    lines = b"".join(binascii.b2a_uu(EXE[i:i + 45]) for i in range(0, len(EXE), 45))
    body = b"Hello, see the file below.\r\n\r\nbegin 644 tool.exe\r\n" + lines.replace(b"\n", b"\r\n") \
        + b"`\r\nend\r\n\r\nBye.\r\n"
    model = parse_message(HEAD + b"Content-Type: text/plain\r\n\r\n" + body)
    uu = [p for p in model.parts if p.origin == "uuencode"]
    assert len(uu) == 1
    assert uu[0].names == ["tool.exe"] and uu[0].payload == EXE
    assert uu[0].is_attachment and uu[0].true_type == "executable"
    assert model.body_text == "Hello, see the file below. Bye."


def test_duplicate_boundary_parameters_each_scanned():
    raw = HEAD + (b'Content-Type: multipart/mixed; boundary="one"; boundary="two"\r\n\r\n'
                  b"--one\r\n" + exe_part("via-one.exe") + b"--one--\r\n"
                  b"--two\r\n" + exe_part("via-two.exe") + b"--two--\r\n")
    model = parse_message(raw)
    assert {"via-one.exe", "via-two.exe"} <= names(model)
    assert "malformed" in model.flags


def test_unusual_boundary_characters():
    boundary = 'a b+(c)[*]?$^.\\'
    raw = HEAD + (f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode()
                  + exe_part("odd.exe") + f"--{boundary}--\r\n".encode())
    model = parse_message(raw)
    assert "odd.exe" in names(model)
    assert "malformed" in model.flags


def test_missing_final_boundary_still_finds_parts():
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                  b"Content-Type: text/plain\r\n\r\nhello\r\n--zz\r\n" + exe_part("last.exe"))
    model = parse_message(raw)
    assert "last.exe" in names(model)
    assert next(p for p in model.parts if p.name == "last.exe").payload == EXE
    assert "malformed" in model.flags


def test_broken_part_header_block_scanned_both_ways():
    # A line without a colon inside the part headers: some readers start the
    # body there (no name), others skip it and see the name and base64.
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                  b"Content-Type: application/octet-stream\r\nthis line has no colon\r\n"
                  b'Content-Disposition: attachment; filename="hidden.exe"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + EXE_B64 + b"--zz--\r\n")
    model = parse_message(raw)
    hidden = [p for p in model.parts if "hidden.exe" in p.names]
    assert hidden and hidden[0].payload == EXE and hidden[0].true_type == "executable"
    assert "malformed" in model.flags


def test_whitespace_line_ending_top_headers_early():
    raw = (b"From: a@example.com\r\nSubject: s\r\n \r\n"
           b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n" + exe_part("late.exe") + b"--zz--\r\n")
    model = parse_message(raw)
    assert "late.exe" in names(model)
    assert "malformed" in model.flags
    assert model.header_values("content-type")


def test_duplicate_content_type_and_disposition_use_all():
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                  b'Content-Type: text/plain; name="notes.txt"\r\n'
                  b'Content-Type: application/x-msdownload; name="setup.exe"\r\n'
                  b'Content-Disposition: attachment; filename="a.txt"\r\n'
                  b'Content-Disposition: attachment; filename="b.scr"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + EXE_B64 + b"--zz--\r\n")
    model = parse_message(raw)
    part = model.attachments[0]
    assert {"notes.txt", "setup.exe", "a.txt", "b.scr"} <= set(part.names)
    assert part.declared_types == ["text/plain", "application/x-msdownload"]
    assert "malformed" in model.flags
    assert len(model.attachments) == 1


def test_conflicting_transfer_encodings_each_decoded():
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                  b'Content-Type: application/octet-stream; name="x.bin"\r\n'
                  b"Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + EXE_B64 + b"--zz--\r\n")
    model = parse_message(raw)
    assert {p.true_type for p in model.parts} >= {"executable"}
    assert "malformed" in model.flags


def test_boundary_guessed_when_parameter_missing():
    raw = HEAD + (b"Content-Type: multipart/mixed\r\n\r\n--guess\r\n" + exe_part("g.exe") + b"--guess--\r\n")
    assert "g.exe" in names(parse_message(raw))


def test_clean_message_is_not_malformed_and_dedup_keeps_real_duplicates():
    raw = HEAD + (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
                  b"Content-Type: text/plain\r\n\r\nhi\r\n--zz\r\n" + exe_part("same.exe")
                  + b"--zz\r\n" + exe_part("same.exe") + b"--zz--\r\n")
    model = parse_message(raw)
    assert not model.flags, model.notes
    assert len([p for p in model.parts if p.name == "same.exe"]) == 2


def test_mime_depth_limit():
    body = exe_part("deep.exe")
    for level in range(40):
        body = (f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n").encode() \
            + body + f"\r\n--b{level}--\r\n".encode()
    model = parse_message(HEAD + body, Limits(max_mime_depth=10))
    assert "malformed" in model.flags
    assert any("deeper" in n for n in model.notes)
    deep = parse_message(HEAD + body, Limits(max_mime_depth=50))
    assert "deep.exe" in names(deep)


def test_part_count_limit():
    body = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n" + b"".join(
        b"--zz\r\n" + exe_part(f"f{i}.exe") for i in range(50)) + b"--zz--\r\n"
    model = parse_message(HEAD + body, Limits(max_parts=20))
    assert len(model.parts) == 20
    assert "malformed" in model.flags


def test_encrypted_smime_and_pgp_flagged():
    smime = HEAD + (b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n")
    assert "encrypted" in parse_message(smime).flags
    pgp = HEAD + b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n"
    assert "encrypted" in parse_message(pgp).flags
