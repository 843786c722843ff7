"""Content-Transfer-Encoding decoding as lenient as mail clients, plus
inline uuencoded files.

Clients decode whatever they can from broken base64 or quoted-printable,
so a scanner that gives up on junk would miss what the user sees.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
_B64_SEGMENTS = re.compile(rb"[A-Za-z0-9+/]+")
_WHITESPACE = b" \t\r\n"


def normalise_cte(value: str | bytes | None) -> str:
    """Map a Content-Transfer-Encoding value to base64, quoted-printable,
    uuencode, or identity. Accepts odd case, quotes and trailing text."""
    known = _COMMON_CTES.get(value)
    if known is not None:
        return known
    return _normalise_cte(value)


def _normalise_cte(value: str | bytes | None) -> str:
    if value is None:
        return "identity"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    token = value.strip().strip("\"'").strip().lower()
    token = re.split(r"[\s;,\"']", token, maxsplit=1)[0] if token else ""
    if "base64" in token or token == "b64":
        return "base64"
    if token.startswith("quoted") or token == "qp":
        return "quoted-printable"
    if token in ("x-uuencode", "uuencode", "x-uue", "uue", "x-uu"):
        return "uuencode"
    # Catch "quoted printable" written with a space and other near misses.
    whole = value.lower()
    if "base64" in whole:
        return "base64"
    if "quoted" in whole:
        return "quoted-printable"
    return "identity"


# The values nearly every message carries, with the answer _normalise_cte gives them.
_COMMON_CTES = {spelling: _normalise_cte(spelling)
                for word in ("7bit", "8bit", "binary", "base64", "quoted-printable",
                             "7BIT", "8BIT", "BINARY", "BASE64", "Base64", "QUOTED-PRINTABLE", "Quoted-Printable")
                for spelling in (word, word.encode("ascii"))}


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Decode base64 leniently. Returns (bytes, clean) where clean is False
    when junk, bad padding or interior padding had to be worked around.

    Junk characters are dropped; '=' in odd places splits the data into
    segments that are decoded on their own; a dangling single character is
    dropped. This decodes what is decodable, as clients do.
    """
    compact = data.translate(None, _WHITESPACE)
    if len(compact) % 4 == 0:
        try:
            return binascii.a2b_base64(compact, strict_mode=True), True
        except (binascii.Error, ValueError):
            pass
    cleaned = _B64_JUNK.sub(b"", compact)
    out = []
    for segment in _B64_SEGMENTS.findall(cleaned):
        usable = len(segment) - (len(segment) % 4 == 1)
        if usable <= 0:
            continue
        chunk = segment[:usable]
        chunk += b"=" * (-len(chunk) % 4)
        try:
            out.append(binascii.a2b_base64(chunk))
        except (binascii.Error, ValueError):
            continue
    return b"".join(out), False


def decode_quoted_printable(data: bytes) -> bytes:
    """Decode quoted-printable, soft line breaks included, never raising."""
    try:
        return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return data


def decode_transfer(data: bytes, cte: str) -> tuple[bytes, list[str]]:
    """Decode a body by its normalised CTE; returns (payload, notes)."""
    if cte == "base64":
        payload, clean = decode_base64(data)
        return payload, ([] if clean else ["base64 had junk or bad padding"])
    if cte == "quoted-printable":
        return decode_quoted_printable(data), []
    if cte == "uuencode":
        files = find_uuencoded(data)
        if files:
            return files[0].payload, []
        return data, ["uuencode body without a begin line"]
    return data, []


# --- inline uuencode ---------------------------------------------------------

@dataclass
class UuFile:
    name: str
    payload: bytes
    start: int
    end: int


_UU_BEGIN = re.compile(rb"^begin(-base64)?[ \t]+([0-7]{3,4})[ \t]+([^\r\n]+?)[ \t]*\r?$", re.MULTILINE)
_UU_END = re.compile(rb"^(?:end|====)[ \t]*\r?$", re.MULTILINE)
MAX_UU_FILES = 100      # per text part; find_uuencoded returns one more when there are more


def _decode_uu_line(line: bytes) -> bytes:
    line = line.rstrip(b"\r\n")
    if not line:
        return b""
    try:
        return binascii.a2b_uu(line)
    except (binascii.Error, ValueError):
        pass
    # Some encoders strip trailing spaces or add junk: decode by hand.
    length = (line[0] - 32) & 63
    out = bytearray()
    chars = [(c - 32) & 63 for c in line[1:]]
    chars += [0] * (-len(chars) % 4)
    for i in range(0, len(chars), 4):
        a, b, c, d = chars[i:i + 4]
        out += bytes(((a << 2 | b >> 4) & 255, (b << 4 | c >> 2) & 255, (c << 6 | d) & 255))
    return bytes(out[:length])


def find_uuencoded(text: bytes) -> list[UuFile]:
    """Find "begin 644 name" ... "end" blocks (and begin-base64 ... ====).

    At most MAX_UU_FILES + 1: a result longer than MAX_UU_FILES tells the
    caller that the limit cut the search."""
    if b"begin" not in text:
        return []
    files: list[UuFile] = []
    for begin in _UU_BEGIN.finditer(text):
        if len(files) > MAX_UU_FILES:
            break
        if files and begin.start() < files[-1].end:
            continue
        end = _UU_END.search(text, begin.end())
        stop = end.start() if end else len(text)
        body = text[begin.end():stop]
        if begin.group(1):
            payload, _clean = decode_base64(body)
        else:
            payload = b"".join(_decode_uu_line(line) for line in body.split(b"\n"))
        name = begin.group(3).decode("utf-8", "replace").strip()
        files.append(UuFile(name=name, payload=payload, start=begin.start(),
                            end=end.end() if end else len(text)))
    return files
