"""Lenient reading of header blocks, RFC 2047 words and header parameters.

Attackers craft headers that one parser reads differently from another, so
these functions keep every plausible reading: a header block that may end
early is also read past the odd line, a parameter with broken quoting
yields both the greedy and the short value, and all name candidates are
kept.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from .charsets import decode_bytes

# A header field name: printable ASCII except colon; some mailers put
# whitespace before the colon ("Subject : x"), which clients accept.
_HEADER_LINE = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_MAX_HEADER_LINES = 5000
_KNOWN_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "date", "reply-to", "sender", "message-id",
    "mime-version", "received", "return-path", "references", "in-reply-to",
}


@dataclass
class HeaderBlock:
    """One reading of a header block: fields in order and where the body starts."""

    fields: list[tuple[str, bytes]] = field(default_factory=list)   # (name, unfolded raw value)
    body_start: int = 0
    anomalies: list[str] = field(default_factory=list)

    def values(self, name: str) -> list[bytes]:
        lname = name.lower()
        return [v for (n, v) in self.fields if n.lower() == lname]


def _iter_lines(data: bytes, start: int):
    """Yield (line_without_eol, start_of_line, start_of_next_line)."""
    pos = start
    end = len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0:
            yield data[pos:].rstrip(b"\r"), pos, end
            return
        yield data[pos:nl].rstrip(b"\r"), pos, nl + 1
        pos = nl + 1


# A header block with nothing odd in it: header lines, each with its non-blank
# continuation lines, then an empty line. The first bytes of the three kinds
# of line differ, so a failed match gives back nothing that could match
# otherwise. (No possessive quantifiers: Python 3.11.2, Debian 12's, matches
# them differently from later 3.11 releases.)
_PLAIN_FIELD = re.compile(
    rb"([!-9;-~]+)[ \t]*:([^\n]*\n(?:[ \t][ \t\r\x0b\x0c]*[^ \t\r\x0b\x0c\n][^\n]*\n)*)")
_PLAIN_BLOCK = re.compile(rb"(?:" + _PLAIN_FIELD.pattern + rb")*\r*\n")


def _plain_block(data: bytes, start: int) -> HeaderBlock | None:
    """The block at `start` read in one regex pass when it is plain (no odd
    line, no mbox From line, not too long); None sends it to the line reader,
    which gives the same fields and body start for a plain block."""
    if start == 0 and data.startswith(b"From "):
        return None
    match = _PLAIN_BLOCK.match(data, start)
    if match is None or data.count(b"\n", start, match.end()) > _MAX_HEADER_LINES:
        return None
    # _unfold's one-line case inline: it is nearly every field.
    fields = [(name.decode("ascii"), value.strip() if value.count(b"\n") == 1 else _unfold(value))
              for name, value in _PLAIN_FIELD.findall(data, start, match.end())]
    return HeaderBlock(fields=fields, body_start=match.end())


def _unfold(value: bytes) -> bytes:
    """A field's value lines (each ending in a newline), trimmed and joined by a space."""
    if value.count(b"\n") == 1:
        return value.strip()        # one line, the common case; the newline is whitespace too
    return b" ".join(piece.strip() for piece in value.split(b"\n")[:-1])


def read_header_blocks(data: bytes, start: int = 0) -> tuple[HeaderBlock, HeaderBlock | None]:
    """Read the header block at `start`.

    Returns the strict reading (ends at the first line that cannot belong to
    a header: an empty line, a whitespace-only line, or a line without a
    colon) and, when such an odd line came before the real empty line and
    more header lines follow it, a lenient reading that skips odd lines and
    goes on to the empty line. Both readings matter: a client may show the
    lines after the odd line as body while a scanner reads them as headers,
    or the other way round.
    """
    plain = _plain_block(data, start)
    if plain is not None:
        return plain, None
    return _read_header_lines(data, start)


def _read_header_lines(data: bytes, start: int) -> tuple[HeaderBlock, HeaderBlock | None]:
    """read_header_blocks line by line, for blocks with something odd in them."""
    strict = HeaderBlock(body_start=len(data))
    lenient: HeaderBlock | None = None
    current: list | None = None     # [name, value] of the field being unfolded
    block = strict
    strict_done = False
    lines_seen = 0
    first = True
    for line, line_start, next_start in _iter_lines(data, start):
        lines_seen += 1
        if lines_seen > _MAX_HEADER_LINES:
            block.anomalies.append("header block too long")
            block.body_start = line_start
            break
        if first and line.startswith(b"From ") and start == 0:
            first = False       # mbox separator line, not a header
            continue
        first = False
        if not line:
            if current:
                block.fields.append((current[0], current[1]))
                current = None
            block.body_start = next_start
            break
        if line[:1] in (b" ", b"\t"):
            if not line.strip():
                odd = "whitespace-only line inside the header block"
            elif current is not None:
                current[1] += b" " + line.strip()
                continue
            else:
                odd = "continuation line without a header"
        else:
            match = _HEADER_LINE.match(line)
            if match:
                if current:
                    block.fields.append((current[0], current[1]))
                name = match.group(1).decode("ascii", "replace")
                current = [name, line[match.end():].strip()]
                continue
            odd = "header line without a colon"
        # An odd line: the strict reading ends here.
        if current:
            block.fields.append((current[0], current[1]))
            current = None
        if not strict_done:
            strict_done = True
            strict.anomalies.append(odd)
            # A whitespace-only line reads like the blank separator; a line
            # without a colon is the first body line (as Python's parser does).
            strict.body_start = next_start if not line.strip() else line_start
            lenient = HeaderBlock(fields=list(strict.fields), anomalies=[odd])
            block = lenient
        else:
            block.anomalies.append(odd)
    else:
        # Ran out of data without an empty line: the whole rest is headers.
        if current:
            block.fields.append((current[0], current[1]))
        block.body_start = len(data)
        if block is strict:
            if strict.fields:
                strict.anomalies.append("no empty line after the headers")
    if lenient is not None and not any(
            name.lower() in _KNOWN_HEADERS or name.lower().startswith("content-")
            for name, _value in lenient.fields[len(strict.fields):]):
        # Only body lines that happen to contain a colon follow the odd line:
        # no plausible second reading.
        lenient = None
    return strict, lenient


# --- RFC 2047 encoded words -------------------------------------------------

# Lenient: charset may carry *lang, text may contain spaces or '?' (seen in
# the wild), the closing ?= may be missing at the very end.
_ENCODED_WORD = re.compile(
    rb"=\?([^?\s\"]{1,60})\?([bBqQ])\?(.*?)(?:\?=|$)", re.DOTALL)
_BETWEEN_WORDS = re.compile(rb"^[ \t\r\n]*$")


def _decode_b(text: bytes) -> bytes:
    from .transfer import decode_base64     # local import: no cycle at load
    return decode_base64(text)[0]


def _decode_q(text: bytes) -> bytes:
    text = text.replace(b"_", b" ")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text)


def decode_rfc2047(raw: bytes | str) -> str:
    """Decode a header value with RFC 2047 words anywhere in it; never raises.

    Adjacent words in the same charset are joined as bytes before decoding,
    because mailers split multi-byte characters across words.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if b"=?" not in raw:
        return decode_bytes(raw)
    out: list[str] = []
    pending_charset: bytes | None = None
    pending: list[bytes] = []
    pos = 0

    def flush():
        nonlocal pending_charset, pending
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset.decode("ascii", "replace")))
        pending_charset, pending = None, []

    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos:match.start()]
        if between and not (pending and _BETWEEN_WORDS.match(between)):
            flush()
            out.append(decode_bytes(between))
        charset = match.group(1)
        text = match.group(3)
        try:
            data = _decode_b(text) if match.group(2) in (b"b", b"B") else _decode_q(text)
        except ValueError:      # undecodable word: keep its text
            data = text
        if pending and charset.lower() != pending_charset.lower():
            flush()
        pending_charset = charset
        pending.append(data)
        pos = match.end()
    flush()
    if pos < len(raw):
        out.append(decode_bytes(raw[pos:]))
    return "".join(out)


# --- Parameters (Content-Type, Content-Disposition) --------------------------

@dataclass
class ParsedHeader:
    """A structured header value: the main token and every parameter seen."""

    value: str                                  # lower-case, e.g. "text/plain", "attachment"
    params: list[tuple[str, str]] = field(default_factory=list)   # (lower name, raw value)
    broken: list[str] = field(default_factory=list)   # why we had to guess

    def get_all(self, name: str) -> list[str]:
        return [v for (n, v) in self.params if n == name]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None


# The gap before a parameter (blanks and stray semicolons) and, when one follows, its name and
# "=": the optional group is tried only where the gap ends, so the name is read there or nowhere.
_PARAM_START = re.compile(r"[ \t;]*(?:\s*([^\s=;\"]+)\s*=\s*)?")
_NEXT_PARAM = re.compile(r";\s*[A-Za-z0-9*_.-]+\s*=")


def parse_structured(raw: bytes | str) -> ParsedHeader:
    """Parse `token; a=b; c="d"` leniently; never raises.

    Broken quoting (no closing quote) yields two values for the parameter:
    everything to the end of the header and the part up to the next
    `; name=`; unquoted values keep inner spaces.
    """
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    text = text.replace("\r", " ").replace("\n", " ")
    head, semi, _rest = text.partition(";")
    result = ParsedHeader(head.strip().strip("\"'").strip().lower(), [], [])
    if not semi:
        return result
    params = result.params
    pos = len(head) + 1
    end = len(text)
    while pos < end:
        match = _PARAM_START.match(text, pos)
        name = match.group(1)
        pos = match.end()
        if name is None:
            if pos >= end:
                break
            nxt = text.find(";", pos)
            result.broken.append("parameter without '='")
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        name = name.lower()
        if pos < end and text[pos] == '"':
            close = text.find('"', pos + 1)
            if close >= 0 and text.find("\\", pos + 1, close) < 0:
                # Closed and without escapes, the common case (what _quoted gives, one reading).
                params.append((name, text[pos + 1:close]))
                nxt = text.find(";", close + 1)
                pos = end if nxt < 0 else nxt + 1
                continue
            value, i, closed = _quoted(text, pos + 1)
            if closed:
                params.append((name, value))
                raw_value = text[pos + 1:i]
                if raw_value != value:
                    # Windows paths: clients keep the backslashes RFC 822 would unescape.
                    params.append((name, raw_value))
                pos = i + 1
                # Junk after the closing quote up to the next ';' is ignored.
                nxt = text.find(";", pos)
                pos = end if nxt < 0 else nxt + 1
            else:
                result.broken.append(f"missing closing quote in {name}")
                params.append((name, value.strip()))
                short = _NEXT_PARAM.search(value)
                if short:
                    params.append((name, value[:short.start()].strip()))
                    pos = pos + 1 + short.start() + 1
                else:
                    pos = end
        else:
            nxt = text.find(";", pos)
            value = text[pos:] if nxt < 0 else text[pos:nxt]
            params.append((name, value.strip()))
            pos = end if nxt < 0 else nxt + 1
    return result


def _quoted(text: str, start: int) -> tuple[str, int, bool]:
    """The quoted string whose text begins at `start`: (unescaped value,
    index of the closing quote or len(text), closed)."""
    end = len(text)
    close = text.find('"', start)
    if text.find("\\", start, end if close < 0 else close) < 0:
        # No escapes, the common case: a slice instead of a loop per character.
        return (text[start:], end, False) if close < 0 else (text[start:close], close, True)
    value_chars = []
    i = start
    while i < end:
        ch = text[i]
        if ch == "\\" and i + 1 < end:
            value_chars.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(value_chars), i, True
        value_chars.append(ch)
        i += 1
    return "".join(value_chars), i, False


_RFC2231_SECTION = re.compile(r"^([^*]+)\*(\d+)?(\*)?$")


def _percent_decode(value: str) -> bytes:
    return urllib.parse.unquote_to_bytes(value.encode("utf-8", "surrogateescape"))


def rfc2231_values(params: list[tuple[str, str]], base: str) -> list[str]:
    """Assemble RFC 2231 values for parameter `base` (name*, name*0*, name*1...).

    Sections may mix encoded (trailing *) and plain parts; the charset comes
    from the first encoded section. Returns 0 or more decoded values (more
    when the same section number appears twice).
    """
    single: list[str] = []
    sections: dict[int, list[tuple[bool, str]]] = {}
    prefix = base + "*"
    for name, value in params:
        if not name.startswith(prefix):
            continue        # the regex below could not match it to `base`; most parameters
        match = _RFC2231_SECTION.match(name)
        if not match or match.group(1) != base:
            continue
        encoded = bool(match.group(3)) or match.group(2) is None
        if match.group(2) is None:
            single.append(_decode_2231_value(value.strip().strip('"'), True))
        else:
            sections.setdefault(int(match.group(2)), []).append((encoded, value))
    results = list(single)
    if sections:
        charset = None
        chunks: list[bytes] = []
        for number in sorted(sections)[:1000]:
            encoded, value = sections[number][0]
            if encoded:
                if number == min(sections) and value.count("'") >= 2:
                    charset, _lang, value = value.split("'", 2)
                chunks.append(_percent_decode(value))
            else:
                chunks.append(value.encode("utf-8", "surrogateescape"))
        results.append(decode_rfc2047(decode_bytes(b"".join(chunks), charset)))
    return results


def _decode_2231_value(value: str, encoded: bool) -> str:
    charset = None
    if encoded and value.count("'") >= 2:
        charset, _lang, value = value.split("'", 2)
    return decode_bytes(_percent_decode(value), charset)


def clean_name(name: str) -> str:
    """Trim what clients trim around a file name: whitespace, quotes, NULs."""
    name = name.replace("\x00", "").strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1].strip()
    return name.strip('"').strip()


def nul_readings(name: str) -> list[str]:
    """A name and, when it holds NULs, what tools make of it: C-string readers stop at the first
    NUL ("evil.exe\\0.txt" is evil.exe), others drop the NULs (evil.exe.txt)."""
    if "\x00" not in name:
        return [name]
    readings = []
    for reading in (name, name.split("\x00", 1)[0], name.replace("\x00", "")):
        if reading and reading not in readings:
            readings.append(reading)
    return readings


def name_candidates(headers: list[ParsedHeader], param: str) -> list[str]:
    """Every distinct decoded candidate for parameter `param` (e.g. filename)."""
    found: list[str] = []
    sectioned = param + "*"
    for header in headers:
        has_sections = False
        for name, value in header.params:
            if name == param:
                if value.isascii() and "=?" not in value:
                    found.append(value)     # what decode_rfc2047 gives plain ASCII
                else:
                    found.append(decode_rfc2047(value.encode("utf-8", "surrogateescape")))
                if "%" in value and "'" in value:
                    # A plain param written in RFC 2231 style: decode that too.
                    found.append(_decode_2231_value(value, True))
            elif name.startswith(sectioned):
                has_sections = True
        if has_sections:        # else rfc2231_values finds nothing
            found.extend(rfc2231_values(header.params, param))
    names: list[str] = []
    for value in found:
        for reading in nul_readings(value):
            for candidate in (reading, _basename(reading)):
                candidate = clean_name(candidate)
                if candidate and candidate not in names:
                    names.append(candidate)
    return names


def _basename(name: str) -> str:
    """The last path component: clients save "C:\\x\\evil.exe" as evil.exe."""
    cut = max(name.rfind("/"), name.rfind("\\"))
    return name[cut + 1:] if cut >= 0 else name
