"""Fast paths of the MIME parser give what the general readings they replace give.

Each test runs the fast path and a plain reference (the general code it
replaced, kept here) on many varied inputs, odd and hostile ones included.
"""

import io
import random
import re
import struct
import urllib.parse
import zipfile

import pytest

from imss_milter.mime import archives, headers, parser, text, transfer, truetype
from imss_milter.mime.headers import HeaderBlock, ParsedHeader
from imss_milter.mime.model import Limits


# --- headers -----------------------------------------------------------------------

_PARAM_NAME = re.compile(r"\s*([^\s=;\"]+)\s*=\s*")


def _parse_structured_reference(raw):
    """parse_structured as a character loop and one reading per quoted value."""
    text_ = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    text_ = text_.replace("\r", " ").replace("\n", " ")
    semi = text_.find(";")
    head = text_ if semi < 0 else text_[:semi]
    result = ParsedHeader(value=head.strip().strip("\"'").strip().lower())
    if semi < 0:
        return result
    pos, end = semi + 1, len(text_)
    while pos < end:
        while pos < end and text_[pos] in " \t;":
            pos += 1
        if pos >= end:
            break
        match = _PARAM_NAME.match(text_, pos)
        if not match:
            nxt = text_.find(";", pos)
            result.broken.append("parameter without '='")
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        name = match.group(1).lower()
        pos = match.end()
        if pos < end and text_[pos] == '"':
            value, i, closed = headers._quoted(text_, pos + 1)
            if closed:
                result.params.append((name, value))
                if text_[pos + 1:i] != value:
                    result.params.append((name, text_[pos + 1:i]))
                nxt = text_.find(";", i + 1)
                pos = end if nxt < 0 else nxt + 1
            else:
                result.broken.append(f"missing closing quote in {name}")
                result.params.append((name, value.strip()))
                short = headers._NEXT_PARAM.search(value)
                if short:
                    result.params.append((name, value[:short.start()].strip()))
                    pos = pos + 1 + short.start() + 1
                else:
                    pos = end
        else:
            nxt = text_.find(";", pos)
            value = text_[pos:] if nxt < 0 else text_[pos:nxt]
            result.params.append((name, value.strip()))
            pos = end if nxt < 0 else nxt + 1
    return result


_VALUE_PIECES = ['a', 'b', ' ', '\t', ';', '=', '"', '\\', "'", '*', '\r', '\n', 'x=', 'name', 'filename*0*',
                 'filename*1', '; ', '=?utf-8?q?x?=', '\x0b', '\xa0', 'é', '%20', "utf-8''", '\udcff', 'boundary=']
_VALUE_SEEDS = ['text/plain; charset="utf-8"', 'attachment; filename="C:\\\\x\\\\a.exe"',
                'multipart/mixed; boundary="=_a;b"', 'a; b=c; d="e', 'inline;;; ;x', ' ; =',
                'attachment; filename*0*=utf-8\'\'a%20b; filename*1=".exe"', 'Application/PDF; NAME=a.pdf']


def _random_values(rng, count):
    for _ in range(count):
        if rng.random() < 0.5:
            value = "".join(rng.choice(_VALUE_PIECES) for _ in range(rng.randrange(0, 25)))
        else:
            chars = list(rng.choice(_VALUE_SEEDS))
            for _ in range(rng.randrange(0, 4)):
                at = rng.randrange(len(chars) + 1)
                chars[at:at] = [rng.choice(_VALUE_PIECES)]
            value = "".join(chars)
        yield value


def test_parse_structured_reads_like_the_character_loop():
    rng = random.Random(3)
    for value in _random_values(rng, 40000):
        for raw in (value, value.encode("utf-8", "surrogateescape")):
            fast, slow = headers.parse_structured(raw), _parse_structured_reference(raw)
            assert (fast.value, fast.params, fast.broken) == (slow.value, slow.params, slow.broken), raw


def _rfc2231_values_reference(params, base):
    """rfc2231_values running its regex on every parameter."""
    single, sections = [], {}
    for name, value in params:
        match = headers._RFC2231_SECTION.match(name)
        if not match or match.group(1) != base:
            continue
        if match.group(2) is None:
            single.append(headers._decode_2231_value(value.strip().strip('"'), True))
        else:
            sections.setdefault(int(match.group(2)), []).append((bool(match.group(3)), value))
    results = list(single)
    if sections:
        charset, chunks = None, []
        for number in sorted(sections)[:1000]:
            encoded, value = sections[number][0]
            if encoded:
                if number == min(sections) and value.count("'") >= 2:
                    charset, _lang, value = value.split("'", 2)
                chunks.append(urllib.parse.unquote_to_bytes(value.encode("utf-8", "surrogateescape")))
            else:
                chunks.append(value.encode("utf-8", "surrogateescape"))
        results.append(headers.decode_rfc2047(headers.decode_bytes(b"".join(chunks), charset)))
    return results


def _name_candidates_reference(parsed, param):
    """name_candidates decoding every value through decode_rfc2047."""
    found = []
    for header in parsed:
        for value in header.get_all(param):
            found.append(headers.decode_rfc2047(value.encode("utf-8", "surrogateescape")))
            if "%" in value and "'" in value:
                found.append(headers._decode_2231_value(value, True))
        found.extend(_rfc2231_values_reference(header.params, param))
    names = []
    for value in found:
        for candidate in (value, headers._basename(value)):
            candidate = headers.clean_name(candidate)
            if candidate and candidate not in names:
                names.append(candidate)
    return names


def _outcome(function, *args):
    """What a call gives, or the type of what it raises (a charset Python ships but cannot
    look up, such as "utéf-8", raises in both readings)."""
    try:
        return function(*args)
    except Exception as error:
        return ("raised", type(error).__name__)


def test_names_and_rfc2231_values_match_the_general_readings():
    rng = random.Random(5)
    values = list(_random_values(rng, 6000))
    for value in values:
        parsed = [headers.parse_structured(value)]
        if rng.random() < 0.3:
            parsed.append(headers.parse_structured(rng.choice(values)))
        for param in ("filename", "name", "boundary"):
            assert _outcome(headers.name_candidates, parsed, param) == \
                _outcome(_name_candidates_reference, parsed, param), value
            for header in parsed:
                assert _outcome(headers.rfc2231_values, header.params, param) == \
                    _outcome(_rfc2231_values_reference, header.params, param), value


def test_one_pass_over_the_mime_fields_gives_what_values_gives():
    rng = random.Random(7)
    names = ["Content-Type", "content-type", "CONTENT-TYPE", "Content-Disposition", "content-DISPOSITION",
             "Content-Transfer-Encoding", "content-transfer-encoding", "Subject", "X-Content-Type", "Content-Typ"]
    ctes = [b"base64", b"BASE64", b"7bit", b"quoted-printable", b"Quoted Printable", b"x-uuencode", b"b64; x",
            b"'base64'", b"", b"8bit", b"binary", b"junk"]
    for _ in range(5000):
        fields = []
        for _ in range(rng.randrange(0, 7)):
            name = rng.choice(names)
            if "encoding" in name.lower():
                value = rng.choice(ctes)
            else:
                value = rng.choice(list(_random_values(rng, 1))).encode("utf-8", "surrogateescape")
            fields.append((name, value))
        block = HeaderBlock(fields=fields)
        types, dispositions, found_ctes = parser._mime_headers(block)
        assert types == [headers.parse_structured(v) for v in block.values("content-type")]
        assert dispositions == [headers.parse_structured(v) for v in block.values("content-disposition")]
        assert found_ctes == parser._distinct(
            [transfer.normalise_cte(v) for v in block.values("content-transfer-encoding")])


def test_common_cte_spellings_get_the_general_answer():
    for spelling, answer in transfer._COMMON_CTES.items():
        assert transfer._normalise_cte(spelling) == answer
    rng = random.Random(1)
    pieces = ["base", "64", "quoted", "-", "printable", " ", "'", '"', ";", "x-uu", "encode", "BIT", "7", "b"]
    for _ in range(5000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 5)))
        for raw in (value, value.encode()):
            assert transfer.normalise_cte(raw) == transfer._normalise_cte(raw)


# --- true type ---------------------------------------------------------------------

def _own_check_reference(payload):
    """_own_check calling every check in order."""
    for check in (truetype._check_pe, truetype._check_macho, truetype._check_zip, truetype._check_media):
        found = check(payload)
        if found:
            return found
    ole = truetype._check_ole2(payload)
    if ole:
        return ole[0], ole[1]
    for prefix, offset, category, mime in truetype._SIGNATURES:
        if payload.startswith(prefix, offset):
            return category, mime
    if b"%PDF-" in payload[:1024]:
        return "pdf", "application/pdf"
    return None


def test_own_check_by_first_byte_matches_every_check_in_order():
    rng = random.Random(5)
    heads = [b"MZ", b"PK\x03\x04", b"PK\x05\x06", b"RIFF", b"FORM", b"OggS", b"BM", b"\xff\xfb", b"\xff\xe2",
             b"\xca\xfe\xba\xbe", b"\xfe\xed\xfa\xce", b"\xcf\xfa\xed\xfe", b"\xbe\xba\xfe\xca", b"%PDF-",
             b"\x7fELF", b"", b"x", b"GIF89a", b"\x1f\x8b", b"Rar!\x1a\x07"]
    for _ in range(30000):
        payload = rng.choice(heads) + bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 4, 8, 30, 70])))
        if rng.random() < 0.3 and len(payload) >= 8:
            payload = payload[:4] + b"ftyp" + payload[8:]
        if rng.random() < 0.1:
            payload = payload[:8] + rng.choice([b"WAVE", b"AVI ", b"AIFF", b"M4A ", b"heic"]) + payload[12:]
        if rng.random() < 0.1:
            payload = rng.choice(heads) + payload
        assert truetype._own_check(payload, "") == _own_check_reference(payload), payload


def _looks_like_email_reference(payload):
    head = payload[:4096].lstrip(b"\r\n")
    if head.startswith(b"From "):
        head = head.split(b"\n", 1)[-1]
    known = 0
    for line in head.split(b"\n", 40)[:40]:
        line = line.rstrip(b"\r")
        if not line:
            break
        if not truetype._HEADER_LIKE_LINE.match(line):
            return False
        if truetype._MAIL_HEADER.match(line):
            known += 1
    return known >= 2


def test_looks_like_email_line_by_line_matches_splitting():
    rng = random.Random(7)
    lines = [b"From: a@b", b"To: c", b"Subject: x", b"X-Foo: y", b" cont", b"\tcont", b"", b"\r", b"body text",
             b"From x@y Mon", b"Received: a", b"bad line", b"A:b"]
    emails = 0
    for _ in range(20000):
        payload = b"".join(rng.choice(lines) + rng.choice([b"\n", b"\r\n", b"\r\r\n"])
                           for _ in range(rng.randrange(0, 50)))
        if rng.random() < 0.3:
            payload = rng.choice([b"\r\n", b"\n\n", b"From x\n", b""]) + payload
        if rng.random() < 0.3:
            payload = payload[:rng.randrange(len(payload) + 1)]
        if rng.random() < 0.05:
            payload *= 40
        answer = truetype.looks_like_email(payload)
        assert answer == _looks_like_email_reference(payload), payload
        emails += answer
    assert emails > 500


# --- HTML --------------------------------------------------------------------------

def _flat_any_case(*names):
    def one(name):
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)
    return "(?:" + "|".join(one(n) for n in sorted(names, key=len, reverse=True)) + ")"


def test_tag_alternations_grouped_by_first_letter_match_the_flat_ones():
    names = ["p", "pre", "div", "br", "h1", "h2", "html", "head", "header", "table", "tbody", "td", "title",
             "script", "style", "noscript", "section", "dd", "dl", "dt"]
    rng = random.Random(2)
    pieces = ["<", "</", ">", " ", "x", "\n", "é", "İ", "ſ"] + names + [n.upper() for n in names]
    for _ in range(300):
        chosen = rng.sample(names, rng.randrange(1, len(names)))
        tail = r"\b[^>]*(?:>|\Z)"
        grouped = re.compile(r"</?" + text._any_case(*chosen) + tail)
        flat = re.compile(r"</?" + _flat_any_case(*chosen) + tail)
        captured = re.compile(r"<(" + text._any_case(*chosen) + r")\b")
        flat_captured = re.compile(r"<(" + _flat_any_case(*chosen) + r")\b")
        for _ in range(30):
            sample = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
            assert grouped.sub("|", sample) == flat.sub("|", sample), (chosen, sample)
            assert captured.findall(sample) == flat_captured.findall(sample), (chosen, sample)


# --- zip ---------------------------------------------------------------------------

def _random_zip(rng):
    buffer = io.BytesIO()
    method = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for number in range(rng.randint(0, 4)):
            name = rng.choice(["a.txt", "dir/", "d/b.exe", "ü.txt", "x\x00.exe", "é/ñ", "long" * 20 + ".bin"])
            info = zipfile.ZipInfo(name if name.endswith("/") else name + str(number))
            if rng.random() < 0.3:
                info.flag_bits |= 0x800
            if rng.random() < 0.2:
                info.extra = rng.choice([b"\x55\x54\x05\x00\x01abcd", b"\x01\x00\x08\x00" + b"\x00" * 8,
                                         b"\x55\x54\x09\x00"])
            if rng.random() < 0.2:
                info.comment = b"c" * rng.randint(1, 5)
            data = (bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))) if rng.random() < 0.5
                    else b"hello " * rng.randint(0, 50))
            archive.writestr(info, data)
        if rng.random() < 0.2:
            archive.comment = b"archive comment"
    data = buffer.getvalue()
    if rng.random() < 0.2:
        data = b"prefix junk" * rng.randint(1, 3) + data
    if rng.random() < 0.7:
        data = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if not data:
                break
            at = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.4:
                data[at] = rng.randrange(256)
            elif kind < 0.6:
                del data[at:at + rng.randint(1, 8)]
            elif kind < 0.9:
                central = data.rfind(b"PK\x01\x02")
                if central >= 0 and central + 46 < len(data):
                    data[central + rng.randrange(46)] = rng.randrange(256)
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        data = bytes(data)
    return data


def _expansion(payload):
    try:
        found = archives.expand(payload, "a.zip", archives.Budget(Limits()))
    except Exception as error:      # the same failure either way
        return ("raised", type(error).__name__)
    if found is None:
        return None
    return ([(m.names, m.payload, m.encrypted, m.notes) for m in found.members], found.limit_notes,
            found.malformed_notes, found.unreadable_notes, found.encrypted_notes)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_own_central_directory_reading_matches_zipfile(monkeypatch):
    rng = random.Random(11)
    samples = [_random_zip(rng) for _ in range(3000)]
    fast_read = 0
    for payload in samples:
        entries = archives._central_directory(payload)
        if entries is None:
            continue
        fast_read += 1
        infos = zipfile.ZipFile(io.BytesIO(payload)).infolist()     # must not raise where ours reads
        assert [(e.orig_filename, e.filename, e.flag_bits, e.compress_type, e.compress_size, e.header_offset,
                 e.is_dir()) for e in entries] == \
               [(i.orig_filename, i.filename, i.flag_bits, i.compress_type, i.compress_size, i.header_offset,
                 i.is_dir()) for i in infos]
        assert [e.raw_name for e in entries] == [
            i.orig_filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437") for i in infos]
    assert fast_read > 500
    expanded = [_expansion(payload) for payload in samples]
    monkeypatch.setattr(archives, "_central_directory", lambda payload: None)    # zipfile reads every one
    assert [_expansion(payload) for payload in samples] == expanded


def test_ascii_zip_names_need_no_cp437_codec():
    rng = random.Random(4)
    for _ in range(3000):
        raw = bytes(rng.randrange(128 if rng.random() < 0.7 else 256) for _ in range(rng.randrange(0, 12)))
        for utf8_flag in (False, True):
            reference = ([raw.decode("utf-8", "replace")] if utf8_flag else [raw.decode("cp437")])
            if not utf8_flag:
                try:
                    if raw.decode("utf-8") not in reference:
                        reference.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    pass
            assert archives._zip_names(raw, utf8_flag) == reference, raw


def test_zip_members_read_through_zipfile_when_the_method_needs_it():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("a.txt", b"bzip2 member " * 20)
        archive.writestr("b.exe", b"MZ" + b"\x00" * 100)
    payload = buffer.getvalue()
    assert archives._central_directory(payload) is not None
    found = archives.expand(payload, "x.zip", archives.Budget(Limits()))
    assert [(m.names, m.payload) for m in found.members] == [
        (["a.txt"], b"bzip2 member " * 20), (["b.exe"], b"MZ" + b"\x00" * 100)]
    assert struct.unpack_from("<H", payload, 8)[0] == zipfile.ZIP_BZIP2
