"""Fast paths in header reading give what the plain per-character reading gives."""

import random

from imss_milter.mime import headers


def _quoted_char_by_char(text: str, start: int) -> tuple[str, int, bool]:
    """RFC 822 quoted-string reading, one character at a time."""
    chars = []
    i = start
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
        elif text[i] == '"':
            return "".join(chars), i, True
        else:
            chars.append(text[i])
            i += 1
    return "".join(chars), i, False


def test_quoted_strings_read_like_the_character_loop():
    rng = random.Random(3)
    alphabet = 'ab \\";=.'
    cases = ['a"', 'a', '', '"', '\\', 'a\\', 'C:\\x\\y.exe"; b=1', 'no close; name=x', '\\""', 'x\\\\"y"']
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14))) for _ in range(3000)]
    for text in cases:
        for start in range(len(text) + 1):
            assert headers._quoted(text, start) == _quoted_char_by_char(text, start), (text, start)


def test_parameter_values_with_and_without_escapes():
    parsed = headers.parse_structured(b'attachment; filename="C:\\\\tmp\\\\a.exe"; size="3"; x="open')
    assert parsed.value == "attachment"
    assert parsed.get_all("filename") == ["C:\\tmp\\a.exe", "C:\\\\tmp\\\\a.exe"]
    assert parsed.get_all("size") == ["3"]
    assert parsed.get_all("x") == ["open"]
    assert parsed.broken == ["missing closing quote in x"]


def _random_header_data(rng: random.Random) -> bytes:
    lines = [b"Subject: hi", b"From: a@example.org", b"X-A :  b ", b"Content-Type: text/plain;",
             b'\tcharset="utf-8"', b"  folded  ", b" ", b"\t\r", b"", b"no colon here", b"From x",
             b"bad name: x", b"\xe9: x", b"A:", b"a:\x00b", b":x", b"\x0b", b"\r", b"To: b\rc"]
    eols = [b"\n", b"\r\n", b"\r\r\n", b"\n\r"]
    out = b"".join(rng.choice(lines) + rng.choice(eols) for _ in range(rng.randrange(0, 9)))
    return out + rng.choice([b"", b"body\n", b"\n", b"\r\nbody", b"Subject: late\n\nbody"])


def test_one_pass_reading_gives_what_the_line_reader_gives():
    rng = random.Random(9)
    plain = 0
    for _ in range(20000):
        data = _random_header_data(rng)
        start = rng.choice([0, 0, 0, min(len(data), rng.randrange(0, 5))])
        fast = headers.read_header_blocks(data, start)
        slow = headers._read_header_lines(data, start)
        assert fast == slow, (data, start)
        plain += headers._plain_block(data, start) is not None
    assert plain > 2000       # the one-pass reading was exercised


def test_over_long_blocks_still_note_their_length():
    data = b"X-A: b\n" * (headers._MAX_HEADER_LINES + 1) + b"\nbody"
    strict, _lenient = headers.read_header_blocks(data)
    assert strict.anomalies == ["header block too long"]
    data = b"X-A: b\n" * (headers._MAX_HEADER_LINES - 1) + b"\nbody"
    strict, _lenient = headers.read_header_blocks(data)
    assert not strict.anomalies and data[strict.body_start:] == b"body"
