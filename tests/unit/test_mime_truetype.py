"""True type from content, not from names or declared types."""

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import wave
import zipfile
import zlib

import pytest

from imss_milter.mime import TRUE_TYPE_CATEGORIES, parse_message, true_type_of


def pe_file() -> bytes:
    header = bytearray(b"MZ" + b"\x90\x00" * 29)
    header += b"\x00" * (0x3C - len(header)) + struct.pack("<I", 0x80)
    header += b"\x00" * (0x80 - len(header)) + b"PE\x00\x00" + struct.pack("<H", 0x14C) + b"\x00" * 200
    return bytes(header)


def png_file() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def wav_file() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def ole2_file(*stream_names: str) -> bytes:
    """An OLE2 header and a directory sector naming the given streams."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    entries = b""
    for name in ("Root Entry",) + stream_names:
        encoded = name.encode("utf-16-le") + b"\x00\x00"
        entry = encoded + b"\x00" * (64 - len(encoded)) + struct.pack("<H", len(encoded))
        entries += entry + b"\x00" * (128 - len(entry))
    return header + entries + b"\x00" * 1024


def tar_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


CASES = {
    "pe": (pe_file(), "", "executable"),
    "dos-mz-only": (b"MZ" + b"\x00" * 100, "", "executable"),
    "elf": (b"\x7fELF\x02\x01\x01" + b"\x00" * 120, "", "executable"),
    "macho-64": (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 60, "", "executable"),
    "macho-32-be": (b"\xfe\xed\xfa\xce" + b"\x00" * 60, "", "executable"),
    "macho-fat": (b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\x00" * 60, "", "executable"),
    "shebang": (b"#!/bin/sh\ncurl http://x | sh\n", "", "script"),
    "vbscript": (b'Dim o\r\nSet o = CreateObject("WScript.Shell")\r\no.Run "calc"\r\n', "", "script"),
    "jscript": (b'var s = new ActiveXObject("WScript.Shell");\ns.Run("cmd");\n', "", "script"),
    "powershell": (b"$c = New-Object System.Net.WebClient\n$c.DownloadString('x') | IEX\n", "", "script"),
    "batch": (b"@echo off\r\nset x=1\r\nstart %TEMP%\\a.exe\r\n", "", "script"),
    "js-by-name": (b"console.log(1)\n", "invoice.js", "script"),
    "docx": (zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"}), "", "document"),
    "xlsm": (zip_of({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<w/>",
                     "xl/vbaProject.bin": b"\x00" * 10}), "", "office-macro"),
    "doc": (ole2_file("WordDocument", "1Table"), "", "document"),
    "doc-macro": (ole2_file("WordDocument", "Macros", "VBA", "_VBA_PROJECT"), "", "office-macro"),
    "pdf": (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n", "", "pdf"),
    "pdf-late-header": (b"\x00junk\n%PDF-1.4\n%%EOF\n", "", "pdf"),
    "rtf": (b"{\\rtf1\\ansi hello}", "", "document"),
    "png": (png_file(), "", "image"),
    "gif": (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
            b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;", "", "image"),
    "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 100, "", "image"),
    "wav": (wav_file(), "", "audio"),
    "mp3-id3": (b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 50, "", "audio"),
    "mp4": (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 100, "", "video"),
    "avi": (b"RIFF\x00\x10\x00\x00AVI LIST" + b"\x00" * 100, "", "video"),
    "html": (b"<!DOCTYPE html><html><body>hi</body></html>", "", "html"),
    "email": (b"From: a@b.c\r\nTo: d@e.f\r\nSubject: hi\r\n\r\nbody\r\n", "", "email"),
    "text": (b"Dear customer,\r\nplease find the report attached.\r\n", "", "text"),
    "zip": (zip_of({"a.txt": b"hello"}), "", "archive"),
    "tar": (tar_of("a.txt", b"hello"), "", "archive"),
    "gzip": (gzip.compress(b"hello"), "", "archive"),
    "bzip2": (bz2.compress(b"hello"), "", "archive"),
    "xz": (lzma.compress(b"hello"), "", "archive"),
    "7z": (b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 40, "", "archive"),
    "rar": (b"Rar!\x1a\x07\x01\x00" + b"\x00" * 40, "", "archive"),
    "cab": (b"MSCF\x00\x00\x00\x00" + b"\x00" * 40, "", "archive"),
}


@pytest.mark.parametrize("label", sorted(CASES))
def test_true_type_from_content(label):
    payload, hint, expected = CASES[label]
    category, mime = true_type_of(payload, hint)
    assert category == expected, (label, category, mime)
    assert category in TRUE_TYPE_CATEGORIES
    assert "/" in mime


def test_declared_type_and_name_do_not_decide_true_type():
    import base64
    raw = (b"From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
           b'Content-Type: application/pdf; name="invoice.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + base64.encodebytes(pe_file()) + b"--z--\r\n")
    part = parse_message(raw).attachments[0]
    assert part.name == "invoice.pdf"
    assert part.declared_type == "application/pdf"
    assert part.true_type == "executable"
    assert part.mime == "application/x-dosexec"


def test_java_class_is_not_a_fat_binary_but_still_code():
    category, mime = true_type_of(b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\x00" * 60)
    assert category == "executable"
    assert mime != "application/x-mach-binary"


def test_prose_mentioning_code_words_stays_text():
    prose = b"Please do not eval( the numbers yet; the variable costs are set in the sheet.\n"
    assert true_type_of(prose)[0] == "text"


def test_empty_and_garbage_never_raise():
    assert true_type_of(b"") == ("unknown", "application/x-empty")
    assert true_type_of(bytes(range(256)) * 4)[0] in TRUE_TYPE_CATEGORIES


def test_more_executable_and_office_variants():
    assert true_type_of(b"\xce\xfa\xed\xfe" + b"\x00" * 60)[0] == "executable"      # Mach-O 32 LE
    assert true_type_of(b"\xca\xfe\xba\xbf\x00\x00\x00\x01" + b"\x00" * 60)[0] == "executable"  # fat 64
    pptx = zip_of({"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"})
    assert true_type_of(pptx)[0] == "document"
    docm = zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>",
                   "word/vbaProject.bin": b"\x00" * 10})
    assert true_type_of(docm)[0] == "office-macro"
    assert true_type_of(ole2_file("Workbook", "_VBA_PROJECT_CUR", "VBA"))[0] == "office-macro"
    assert true_type_of(ole2_file("Workbook"))[0] == "document"


def test_libmagic_used_from_many_threads():
    from concurrent.futures import ThreadPoolExecutor
    payloads = [(CASES[k][0], CASES[k][2]) for k in ("pe", "png", "pdf", "wav", "zip", "gzip", "jpeg")]
    # Bytes our own checks do not know, so libmagic decides: an SQLite database.
    sqlite = b"SQLite format 3\x00\x10\x00\x01\x01" + b"\x00" * 200

    def classify(index):
        payload, expected = payloads[index % len(payloads)]
        assert true_type_of(payload)[0] == expected
        return true_type_of(sqlite)[1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(classify, range(400)))
    assert len(set(results)) == 1 and "sqlite" in results[0]


def real_pe_files() -> list[bytes]:
    """Windows launchers that pip and setuptools ship: real PE32/PE32+ files."""
    import glob
    import os
    import site
    import sys
    roots = site.getsitepackages() + [os.path.dirname(os.path.dirname(os.__file__)), sys.prefix]
    found = []
    for root in roots:
        for pattern in ("pip/_vendor/distlib/*.exe", "setuptools/*.exe"):
            found += sorted(glob.glob(os.path.join(root, pattern)))
    return [open(path, "rb").read() for path in found[:6]]


def test_pe_files_are_x_dosexec_whatever_libmagic_calls_them():
    from imss_milter.mime.truetype import libmagic_mime
    samples = real_pe_files() + [pe_file(), b"MZ" + b"\x00" * 100]
    assert len(samples) > 2, "pip's launchers are expected in the virtualenv"
    for payload in samples:
        assert true_type_of(payload) == ("executable", "application/x-dosexec"), libmagic_mime(payload)
    # Debian 12's libmagic names real PE files otherwise; the name is normalised.
    assert any(libmagic_mime(p) == "application/vnd.microsoft.portable-executable" for p in samples)


def elf_header(elf_type: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<HHI", elf_type, 0x3E, 1) + b"\x00" * 200


def test_elf_variants_are_executables_under_libmagic_names():
    import _ctypes
    import sys
    from imss_milter.mime.truetype import libmagic_mime
    elf_names = {"application/x-executable", "application/x-pie-executable", "application/x-sharedlib",
                 "application/x-object"}
    samples = {"relocatable": elf_header(1), "exec": elf_header(2), "dyn": elf_header(3),
               "python": open(sys.executable, "rb").read(), "extension": open(_ctypes.__file__, "rb").read()}
    seen = set()
    for label, payload in samples.items():
        category, mime = true_type_of(payload, "report.pdf")
        assert category == "executable", (label, mime)
        assert mime in elf_names, (label, mime)
        if libmagic_mime(payload) in elf_names:
            assert mime == libmagic_mime(payload)      # libmagic's name kept
        seen.add(mime)
    assert {"application/x-executable", "application/x-sharedlib", "application/x-object"} <= seen


def counting_magic(monkeypatch):
    """Count Magic instances created and the sizes of buffers libmagic sees."""
    from imss_milter.mime import truetype
    created, sizes = [], []
    real_magic = truetype._magic_module.Magic

    class CountingMagic(real_magic):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

        def from_buffer(self, buf):
            sizes.append(len(buf))
            return super().from_buffer(buf)
    monkeypatch.setattr(truetype._magic_module, "Magic", CountingMagic)
    # Start from an empty pool so only this test's instances count.
    monkeypatch.setattr(truetype, "_magic_pool", type(truetype._magic_pool)(maxsize=truetype._POOL_KEEP))
    return created, sizes


SQLITE = b"SQLite format 3\x00\x10\x00\x01\x01" + b"\x00" * 200


def test_libmagic_instances_outlive_connection_threads(monkeypatch):
    import threading
    created, _sizes = counting_magic(monkeypatch)
    results = []
    for _connection in range(30):      # the milter: one short-lived thread per SMTP connection
        thread = threading.Thread(target=lambda: results.append(true_type_of(SQLITE)[1]))
        thread.start()
        thread.join()
    assert len(results) == 30 and "sqlite" in results[0]
    assert len(created) == 1


def test_libmagic_pool_never_shares_an_instance_between_threads(monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from imss_milter.mime import truetype
    created, _sizes = counting_magic(monkeypatch)
    in_use, overlaps, guard = set(), [], threading.Lock()
    magic_class = truetype._magic_module.Magic
    original = magic_class.from_buffer

    def watched(self, buf):
        with guard:
            if id(self) in in_use:
                overlaps.append(id(self))
            in_use.add(id(self))
        try:
            return original(self, buf)
        finally:
            with guard:
                in_use.discard(id(self))
    monkeypatch.setattr(magic_class, "from_buffer", watched)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _i: true_type_of(SQLITE)[1], range(400)))
    assert len(set(results)) == 1 and "sqlite" in results[0]
    assert not overlaps
    assert 1 <= len(created) <= 8


def test_libmagic_sees_a_bounded_prefix_of_big_files(monkeypatch):
    import os
    from imss_milter.mime import truetype
    _created, sizes = counting_magic(monkeypatch)
    big = SQLITE + os.urandom(10 * 1024 * 1024)
    category, mime = true_type_of(big)
    assert "sqlite" in mime
    assert sizes and max(sizes) <= truetype.LIBMAGIC_PREFIX
    # OLE2 files are the exception: libmagic follows their sectors anywhere.
    sizes.clear()
    true_type_of(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * (truetype.LIBMAGIC_PREFIX + 10))
    assert sizes and sizes[-1] > truetype.LIBMAGIC_PREFIX


def test_windows_installer_is_executable_not_a_document():
    # MSI is an OLE2 container like .doc; its tables' stream names start
    # with U+4840 in the compressed name encoding.
    msi = ole2_file("\u4840\u3f3f\u4577\u446c\u3b6a\u45e4\u4824", "\u0005SummaryInformation")
    assert true_type_of(msi, "setup.doc") == ("executable", "application/x-msi")
    assert true_type_of(ole2_file("WordDocument"))[0] == "document"


@pytest.mark.parametrize("keyword_search", ["hyperscan", "per keyword"])
def test_script_keywords_only_skip_patterns_that_cannot_match(keyword_search, monkeypatch):
    """Script guessing runs a hint's pattern only when one of its keywords occurs in the text.
    That must answer exactly what running every pattern would: on texts stitched from the
    hints' own words, code fragments and prose, both give the same language (or none), whether
    Hyperscan or a search per keyword finds the keywords."""
    import random
    from imss_milter.mime import truetype
    if keyword_search == "hyperscan":
        if truetype._SCRIPT_KEY_SET.database is None:
            pytest.skip("hyperscan is not installed")
    else:
        monkeypatch.setattr(truetype._SCRIPT_KEY_SET, "database", None)

    def every_pattern(sample: bytes):
        lower = sample.decode("latin-1").lower()
        for mime, strong, weak in truetype._SCRIPT_HINTS.values():
            if any(p.search(lower) for _keys, p in strong):
                return mime
            if sum(1 for _keys, p in weak if p.search(lower)) >= truetype._WEAK_HITS_FOR_SCRIPT:
                return mime
        return None

    fragments = [key for key in truetype._SCRIPT_KEYS] + [
        "Dim x\n", "Set o = CreateObject(\"WScript.Shell\")", "End Sub", "Chr(65)", "var a = 1;",
        "function f(x) {", "eval(s)", "String.fromCharCode(72)", "o.Run(c)", "unescape(u)",
        "$env:TEMP", "IEX", "-ExecutionPolicy Bypass", "[System.Text", "Start-Process x",
        "@echo off\n", "%TEMP%", "cmd /c dir", "\ngoto :end", "\nstart calc", "\nset a=1",
        "certutil", "Invoke-Expression", ".DownloadString(", "New-Object Net.WebClient",
        "On Error Resume Next", "ExecuteGlobal x", "new ActiveXObject(", "Minutes of the meeting. ",
        "Regards, ", "\n", " ", "settle ", "endorse ", "chronic ", "evaluation ", "percent % ", "dimension "]
    rng = random.Random(11)
    guessed = 0
    for _ in range(3000):
        sample = "".join(rng.choice(fragments) for _ in range(rng.randrange(1, 12)))
        sample = "".join(c.upper() if rng.random() < 0.2 else c for c in sample).encode("latin-1")
        wanted = every_pattern(sample)
        assert truetype._script_language(sample) == wanted, sample
        guessed += wanted is not None
    assert 300 < guessed < 2700       # the texts exercise both answers
