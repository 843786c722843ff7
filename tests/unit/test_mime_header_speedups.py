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
