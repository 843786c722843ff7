"""true_type_of skips libmagic only where libmagic could not change the answer.

Each shortcut is checked two ways: structurally (whatever MIME type libmagic
might name, combining it with our check gives our answer) and on samples
(the shortcut gives exactly what running libmagic and combining gives).
"""

import random

import pytest

from imss_milter.mime import true_type_of
from imss_milter.mime import truetype


def _answer_with_libmagic(payload: bytes) -> tuple[str, str]:
    """What true_type_of gave before the shortcut: our check refined by libmagic."""
    own = truetype._own_check(payload, "")
    assert own is not None
    return truetype.combine_with_libmagic(own, truetype.canonical_mime(truetype.libmagic_mime(payload)))


def _every_mime_libmagic_might_name() -> list[str]:
    known = list(truetype._MIME_CATEGORY_EXACT)
    known += [mime for _prefix, _offset, _category, mime in truetype._SIGNATURES]
    known += ["image/x-unknown", "audio/x-unknown", "video/x-unknown", "message/x-unknown",
              "application/vnd.ms-excel.sheet.macroenabled.12", "application/x-unknown",
              "text/x-unknown", "application/octet-stream", "inode/x-empty"]
    return known


@pytest.mark.parametrize("category", sorted(truetype._DECIDED_WITHOUT_LIBMAGIC))
def test_no_libmagic_answer_changes_a_decided_category(category):
    owns = {(c, m) for _p, _o, c, m in truetype._SIGNATURES if c == category}
    owns.add(("pdf", "application/pdf"))
    owns = {own for own in owns if own[0] == category}
    assert owns
    for own in owns:
        for mime in _every_mime_libmagic_might_name():
            assert truetype.combine_with_libmagic(own, mime) == own, (own, mime)


def _pdf_samples() -> list[bytes]:
    rng = random.Random(11)
    body = b"1 0 obj << /Length 10 >> stream\n0123456789\nendstream endobj\n"
    samples = [
        b"%PDF-1.7\n" + body + b"trailer\n<<>>\n%%EOF\n",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + body * 50,
        b"%PDF-2.0",
        b"%PDF-",
        b"\x00junk\n%PDF-1.4\n%%EOF\n",
        b"x" * 1000 + b"%PDF-1.3\n",
        b"%PDF-1.5\n/Encrypt 5 0 R\n" + body,
        b"GIF89a%PDF-1.4" + body,           # our GIF check claims it: no shortcut
        b"<html>%PDF-1.4</html>",
        b"#!/bin/sh\n%PDF-1.4\n",
    ]
    tar_like = bytearray(b"%PDF-1.4\n" + b" " * 600)
    tar_like[257:262] = b"ustar"            # a PDF/tar polyglot
    samples.append(bytes(tar_like))
    iso_like = bytearray(b"%PDF-1.4\n" + b"\x00" * 0x9000)
    iso_like[0x8001:0x8006] = b"CD001"
    samples.append(bytes(iso_like))
    for _ in range(40):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 900)))
        samples.append(junk + b"%PDF-1." + bytes([rng.randrange(48, 58)]) + b"\n"
                       + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000))))
    samples.append(b"%PDF-1.4\n" + b"PK\x03\x04" + body)
    return samples


@pytest.mark.skipif(truetype._magic_module is None, reason="libmagic not installed")
def test_pdf_shortcut_gives_what_libmagic_would():
    checked = 0
    for sample in _pdf_samples():
        own = truetype._own_check(sample, "")
        if own is None or own[0] != "pdf":
            continue        # another own check claims it: the shortcut does not apply
        assert true_type_of(sample) == _answer_with_libmagic(sample) == ("pdf", "application/pdf")
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("tool", ["certutil", "BITSADMIN", "mshta", "rundll32", "regsvr32"])
def test_batch_downloader_tools_still_count_as_script_hints(tool):
    # Two weak batch hints are not enough; the tool name is the third.
    with_tool = f"cd %TEMP%\r\ncmd /c {tool} -f x y\r\nsome words\r\n".encode()
    without = b"cd %TEMP%\r\ncmd /c copy x y\r\nsome words\r\n"
    assert true_type_of(with_tool, "notes.txt") == ("script", "text/x-msdos-batch")
    assert true_type_of(without, "notes.txt") == ("text", "text/plain")


def test_signature_table_by_first_byte_finds_the_first_match_in_table_order():
    rng = random.Random(5)
    samples = [b"", b"\x00", b"\x00\x00\x01\x00", b"\x00\x00\x01\xba", b"x" * 300]
    for prefix, offset, _category, _mime in truetype._SIGNATURES:
        for tail_len in (0, 3, 600, 0x9000):
            head = bytes(rng.randrange(256) for _ in range(offset))
            samples.append(head + prefix + bytes(rng.randrange(256) for _ in range(tail_len)))
    polyglot = bytearray(b"\x1f\x8b" + b"\x00" * 600)
    polyglot[257:262] = b"ustar"
    samples.append(bytes(polyglot))
    for sample in samples:
        in_table_order = next(((c, m) for p, o, c, m in truetype._SIGNATURES if sample.startswith(p, o)), None)
        by_first_byte = next(((c, m) for p, o, c, m in truetype._SIGNATURES_BY_FIRST_BYTE[sample[0]]
                              if sample.startswith(p, o)), None) if sample else None
        assert by_first_byte == in_table_order


def _script_language_every_indicator(sample: bytes):
    """The script guess evaluating every indicator of every language."""
    lower = sample.decode("latin-1").lower()
    for mime, strong, weak in truetype._SCRIPT_HINTS.values():
        if any(any(k in lower for k in keys) and p.search(lower) for keys, p in strong):
            return mime
        if sum(1 for keys, p in weak if any(k in lower for k in keys) and p.search(lower)) >= 3:
            return mime
    return None


@pytest.mark.parametrize("keyword_search", ["hyperscan", "per keyword"])
def test_script_guess_stopping_early_gives_the_same_language(keyword_search, monkeypatch):
    if keyword_search == "hyperscan":
        if truetype._SCRIPT_KEY_SET.database is None:
            pytest.skip("hyperscan is not installed")
    else:
        monkeypatch.setattr(truetype._SCRIPT_KEY_SET, "database", None)
    fragments = ["Dim x\n", 'Set o = CreateObject("WScript.Shell")\n', "End Sub\n", "Chr(65)\n",
                 "On Error Resume Next\n", "var a = 1;\n", "function f(x) {\n", "eval(s)\n",
                 "String.fromCharCode(72)\n", "x.Run(c)\n", "unescape(s)\n", "$env:TEMP\n", "IEX\n",
                 "-ExecutionPolicy Bypass\n", "[System.Net\n", "Start-Process x\n", "@echo off\n",
                 "%TEMP%\n", "cmd /c x\n", "goto :a\n", "start x\n", "set a=1\n", "certutil -f\n",
                 "plain words of a letter\n", "set the table\n", "the end is near\n", "\xe9t\xe9\n"]
    rng = random.Random(21)
    guessed = set()
    for _ in range(4000):
        sample = "".join(rng.choice(fragments) for _ in range(rng.randrange(0, 7))).encode("latin-1")
        expected = _script_language_every_indicator(sample)
        assert truetype._script_language(sample) == expected, sample
        guessed.add(expected)
    assert len(guessed) == 5        # every language and "no script" occurred


@pytest.mark.parametrize("text, expected", [
    (b"Notes\n<HTA:APPLICATION id=x>\n", ("script", "application/hta")),
    (b"Some words then <DIV class=x>markup</div>\n", ("html", "text/html")),
    (b"Some words then a < b and c > d\n", ("text", "text/plain")),
    (b"Some words, no markup at all\n", ("text", "text/plain")),
])
def test_markup_in_text_files(text, expected):
    assert true_type_of(text, "notes.txt") == expected


def _zip(entries, comment=b"", method=None) -> bytes:
    import io
    import zipfile
    buffer = io.BytesIO()
    compression = zipfile.ZIP_DEFLATED if method is None else method
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def _zip_samples() -> list[bytes]:
    import zipfile
    rng = random.Random(17)
    samples = [
        _zip([("readme.txt", b"hello"), ("setup.exe", b"MZ" + b"\x00" * 200)]),
        _zip([("a/b/c.bin", bytes(rng.randrange(256) for _ in range(5000)))]),
        _zip([("photo.jpg", b"\xff\xd8\xff" + bytes(rng.randrange(256) for _ in range(3000)))], method=zipfile.ZIP_STORED),
        _zip([]),
        # flavours libmagic names: a jar, ODF and EPUB (first entry mimetype), OOXML, a zip whose member is named like one
        _zip([("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"), ("a/B.class", b"\xca\xfe\xba\xbe")]),
        _zip([("mimetype", b"application/vnd.oasis.opendocument.text"), ("content.xml", b"<x/>")],
             method=zipfile.ZIP_STORED),
        _zip([("mimetype", b"application/epub+zip"), ("META-INF/container.xml", b"<x/>")], method=zipfile.ZIP_STORED),
        _zip([("[Content_Types].xml", b"<Types/>"), ("_rels/.rels", b"<r/>"), ("word/document.xml", b"<w/>")]),
        _zip([("_rels/.rels", b"<r/>"), ("docProps/app.xml", b"<a/>")]),
        _zip([("AndroidManifest.xml", b"\x03\x00\x08\x00"), ("classes.dex", b"dex\n035\x00")]),
        _zip([("notes.txt", b"see word/ and xl/ inside")], method=zipfile.ZIP_STORED),
    ]
    for _ in range(30):
        entries = [("".join(rng.choice("abcdefgh/._-") for _ in range(rng.randrange(1, 20))) or "x",
                    bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000))))
                   for _ in range(rng.randrange(1, 4))]
        samples.append(_zip(entries, method=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))
    return samples


@pytest.mark.skipif(truetype._magic_module is None, reason="libmagic not installed")
def test_zip_shortcut_gives_what_libmagic_would():
    skipped = 0
    for sample in _zip_samples():
        assert true_type_of(sample) == _answer_with_libmagic(sample), sample[:80]
        skipped += truetype._plain_zip(truetype._own_check(sample, ""), sample)
    assert skipped >= 30, "plain zips are answered without libmagic"


def test_zip_flavours_libmagic_knows_are_never_shortcut():
    # (an APK is: libmagic names it, but no category of ours; the test above checks the answer)
    samples = _zip_samples()
    for sample in samples[4:9] + samples[10:11]:
        assert not truetype._plain_zip(truetype._own_check(sample, ""), sample)
