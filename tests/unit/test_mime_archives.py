"""Archive members become parts, within the limits, with every name they carry."""

import base64
import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile

from imss_milter.mime import Limits, parse_message

EXE = b"MZ" + b"\x00" * 0x3A + struct.pack("<I", 0x40) + b"PE\x00\x00" + b"\x00" * 100


def with_attachment(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return (b"From: a@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: text/plain\r\n\r\nsee attached\r\n--zz\r\n"
            + f'Content-Type: {content_type}; name="{name}"\r\n'.encode()
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data) + b"--zz--\r\n")


def zip_of(members: dict, method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
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


def by_path(model):
    return {tuple(p.path): p for p in model.parts}


def test_zip_members_with_names_and_true_types():
    model = parse_message(with_attachment("docs.zip", zip_of({"readme.txt": b"hello there", "a.pdf.exe": EXE})))
    parts = by_path(model)
    assert parts[("docs.zip",)].true_type == "archive"
    member = parts[("docs.zip", "a.pdf.exe")]
    assert member.origin == "archive" and member.is_attachment
    assert member.true_type == "executable"
    assert member.payload == EXE
    assert parts[("docs.zip", "readme.txt")].true_type == "text"
    assert not model.flags


def test_nested_zip_paths_go_deeper():
    inner = zip_of({"run.exe": EXE})
    outer = zip_of({"inner.zip": inner})
    parts = by_path(parse_message(with_attachment("outer.zip", outer)))
    assert parts[("outer.zip", "inner.zip", "run.exe")].true_type == "executable"
    assert parts[("outer.zip", "inner.zip", "run.exe")].depth == parts[("outer.zip", "inner.zip")].depth + 1


def test_tar_and_compressed_tars():
    for suffix, mode in (("tar", "w"), ("tar.gz", "w:gz"), ("tar.bz2", "w:bz2"), ("tar.xz", "w:xz")):
        data = tar_of({"dir/x.exe": EXE, "note.txt": b"text"}, mode)
        parts = by_path(parse_message(with_attachment(f"bundle.{suffix}", data)))
        assert parts[(f"bundle.{suffix}", "dir/x.exe")].true_type == "executable", suffix
        assert parts[(f"bundle.{suffix}", "note.txt")].payload == b"text", suffix


def test_single_file_compressors():
    cases = {"x.exe.gz": gzip.compress(EXE), "x.exe.bz2": bz2.compress(EXE), "x.exe.xz": lzma.compress(EXE)}
    for name, data in cases.items():
        parts = by_path(parse_message(with_attachment(name, data)))
        assert parts[(name, "x.exe")].true_type == "executable", name


def test_gzip_stored_name_is_used():
    out = io.BytesIO()
    with gzip.GzipFile(filename="payload.scr", mode="wb", fileobj=out) as g:
        g.write(EXE)
    parts = by_path(parse_message(with_attachment("harmless.gz", out.getvalue())))
    assert ("harmless.gz", "payload.scr") in parts


def test_archive_depth_limit():
    data = zip_of({"run.exe": EXE})
    for level in range(4):
        data = zip_of({f"level{level}.zip": data})
    model = parse_message(with_attachment("deep.zip", data), Limits(archive_max_depth=2))
    assert "archive.limit_exceeded" in model.flags
    assert not any(p.path[-1] == "run.exe" for p in model.parts)
    assert any("nested deeper" in n for n in model.notes)
    deep_enough = parse_message(with_attachment("deep.zip", data), Limits(archive_max_depth=10))
    assert any(p.path[-1] == "run.exe" for p in deep_enough.parts)
    assert "archive.limit_exceeded" not in deep_enough.flags


def test_entry_limit():
    data = zip_of({f"f{i}.txt": b"x" for i in range(30)})
    model = parse_message(with_attachment("many.zip", data), Limits(archive_max_entries=10))
    assert "archive.limit_exceeded" in model.flags
    assert len([p for p in model.parts if p.origin == "archive"]) == 10


def test_zip_bomb_is_read_only_up_to_the_limits_and_flagged():
    bomb = zip_of({"zeros.bin": b"\x00" * (50 * 1024 * 1024)})
    assert len(bomb) < 100_000
    model = parse_message(with_attachment("bomb.zip", bomb))
    member = by_path(model)[("bomb.zip", "zeros.bin")]
    assert "archive.limit_exceeded" in model.flags
    assert any("ratio" in n for n in model.notes)
    assert len(member.payload) <= len(bomb) * 100


def test_expanded_size_limit_across_members():
    data = zip_of({f"r{i}.bin": bytes(range(256)) * 400 for i in range(5)}, zipfile.ZIP_STORED)
    model = parse_message(with_attachment("big.zip", data), Limits(archive_max_expanded=250_000))
    assert "archive.limit_exceeded" in model.flags
    assert sum(p.size for p in model.parts if p.origin == "archive") <= 250_000


def test_gzip_bomb_bounded():
    bomb = gzip.compress(b"\x00" * (30 * 1024 * 1024))
    model = parse_message(with_attachment("z.gz", bomb), Limits(archive_max_expanded=5 * 1024 * 1024))
    assert "archive.limit_exceeded" in model.flags
    assert max(p.size for p in model.parts if p.origin == "archive") <= 5 * 1024 * 1024


def set_encrypted_bit(data: bytes) -> bytes:
    """Mark every member as (ZipCrypto) encrypted in both headers."""
    out = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(signature)
        while pos >= 0:
            flags = struct.unpack_from("<H", out, pos + flag_offset)[0]
            struct.pack_into("<H", out, pos + flag_offset, flags | 1)
            pos = out.find(signature, pos + 4)
    return bytes(out)


def test_encrypted_zip_member_flagged():
    data = set_encrypted_bit(zip_of({"secret.exe": EXE}, zipfile.ZIP_STORED))
    model = parse_message(with_attachment("locked.zip", data))
    member = by_path(model)[("locked.zip", "secret.exe")]
    assert member.encrypted
    assert "encrypted" in model.flags
    assert any("secret.exe" in n for n in model.notes)


def test_zip_local_and_central_names_disagree():
    data = bytearray(zip_of({"invoice.pdf": EXE}))
    local = data.find(b"PK\x03\x04")
    name_at = data.find(b"invoice.pdf", local)
    data[name_at:name_at + 11] = b"invoice.exe"     # only the local header lies differently
    model = parse_message(with_attachment("mixed.zip", bytes(data)))
    members = [p for p in model.parts if p.origin == "archive"]
    assert len(members) == 1
    assert set(members[0].names) == {"invoice.pdf", "invoice.exe"}
    assert members[0].payload == EXE
    assert "malformed" in model.flags
    assert any("names disagree" in n for n in model.notes)


def test_zip_without_central_directory_read_from_local_headers():
    data = zip_of({"dropper.exe": EXE})
    truncated = data[:data.find(b"PK\x01\x02")]
    model = parse_message(with_attachment("cut.zip", truncated))
    assert by_path(model)[("cut.zip", "dropper.exe")].payload == EXE
    assert "malformed" in model.flags


def _streamed_zip(members: dict) -> bytes:
    """A zip written to a stream that cannot seek: sizes follow each member in a data descriptor."""
    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, chunk):
            self.data += chunk
            return len(chunk)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            with z.open(name, "w") as member:
                member.write(data)
    return bytes(out.data)


def test_zip_members_read_straight_from_their_bytes_are_what_zipfile_reads():
    """Stored and deflated members are inflated from the payload without zipfile's member streams:
    for every kind of zip each member's bytes are exactly zipfile's."""
    import random
    from imss_milter.mime import archives
    rng = random.Random(7)
    texts = {f"dir/file{index}.txt": bytes(rng.choice(b"abc \n") for _ in range(rng.randrange(0, 5000)))
             for index in range(5)}
    binary = {"blob.bin": rng.randbytes(3000), "empty": b"", "sp\u00e4ce n\u00e4me.doc": b"MZ" + rng.randbytes(500)}
    commented = io.BytesIO()
    with zipfile.ZipFile(commented, "w", zipfile.ZIP_DEFLATED) as z:
        z.comment = b"a comment after the central directory"
        z.writestr("a.txt", b"a" * 10_000)
    samples = [zip_of(texts), zip_of(texts, zipfile.ZIP_STORED), zip_of({**texts, **binary}),
               _streamed_zip({**texts, **binary}), commented.getvalue()]
    for sample in samples:
        expansion = archives.expand(sample, "x.zip", archives.Budget(Limits()))
        with zipfile.ZipFile(io.BytesIO(sample)) as reference:
            wanted = {info.filename: reference.read(info) for info in reference.infolist() if not info.is_dir()}
        assert {member.names[0]: member.payload for member in expansion.members} == wanted
        assert not expansion.unreadable_notes and not expansion.limit_notes


def test_zip_member_said_to_run_past_the_payload_reads_as_zipfile_reads_it():
    """A central directory entry that claims more compressed bytes than the payload holds sends the
    member through zipfile (not the straight read): its complete deflate stream is still read whole."""
    from imss_milter.mime import archives
    data = bytes(range(256)) * 400
    whole = bytearray(zip_of({"big.txt": data}))
    entry = whole.index(b"PK\x01\x02")
    struct.pack_into("<I", whole, entry + 20, len(whole) + 1000)     # compressed size
    expansion = archives.expand(bytes(whole), "x.zip", archives.Budget(Limits()))
    assert [member.payload for member in expansion.members] == [data]
