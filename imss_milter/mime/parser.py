"""Raw message bytes → MessageModel, reading ambiguous structure every plausible way.

Our own lenient splitter, not Python's email package: attackers exploit the
gap between what a gateway parses and what a client shows, so wherever the
structure is ambiguous (duplicate boundaries, duplicate headers, header
blocks that may end early, CTE values that disagree) every reading is
scanned, the parts found are merged, and the message is marked malformed.

Corrupt input never raises out of here; a limit that cuts scanning sets
archive.limit_exceeded; an internal failure (not caused by the input) lands
in MessageModel.errors so the caller does not deliver an unscanned message.
"""

from __future__ import annotations

import re

from . import archives
from .charsets import decode_bytes
from .failures import describe, is_input_error
from .headers import (HeaderBlock, ParsedHeader, decode_rfc2047, name_candidates,
                      parse_structured, read_header_blocks, rfc2231_values, clean_name, nul_readings)
from .model import (FLAG_ARCHIVE_LIMIT, FLAG_ENCRYPTED, FLAG_MALFORMED, FLAG_UNSCANNABLE, Limits,
                    MessageModel, Part)
from .text import html_to_lines, html_to_text, normalise_whitespace
from .transfer import MAX_UU_FILES, decode_transfer, find_uuencoded, normalise_cte
from .truetype import document_facts, looks_like_email, true_type_of

_TEXT_BODY_TYPES = ("text/plain", "text/html")
_ENCRYPTED_TYPES = frozenset({"multipart/encrypted", "application/pgp-encrypted", "application/x-pkcs7-mime",
                              "application/pkcs7-mime"})
_PGP_ARMOR = b"-----BEGIN PGP MESSAGE-----"
_BOUNDARY_ODD_CHAR = re.compile(rb"[^0-9A-Za-z'()+_,./:=? -]")     # outside RFC 2046's bchars
_BOUNDARY_GUESS = re.compile(rb"^--([^\s-][^\r\n]{0,200}?|-[^\r\n]{1,200}?)[ \t]*\r?$", re.M)


class _Context:
    """State of one parse: the model being built, limits, dedup of readings."""

    def __init__(self, model: MessageModel, limits: Limits):
        self.model = model
        self.limits = limits
        self.budget = archives.Budget(limits)
        self.seen_parts: set = set()  # keys of model.parts[:parts_keyed], filled when first needed
        self.parts_keyed = 0
        self.seen_texts: set = set()
        self.alternate = 0          # >0 while scanning a second reading
        self.text_chunks: list[str] = []
        self.text_len = 0
        self.part_limit_noted = False

    def flag(self, flag: str, note: str):
        self.model.flags.add(flag)
        if note not in self.model.notes and len(self.model.notes) < 500:
            self.model.notes.append(note)

    def malformed(self, note: str):
        self.flag(FLAG_MALFORMED, note)

    def mime_limit(self, note: str):
        """A MIME limit cut scanning: what lies beyond is unscanned, so the
        limit flag (which shipped rules quarantine) is set, not only malformed."""
        self.flag(FLAG_MALFORMED, note)
        self.flag(FLAG_ARCHIVE_LIMIT, note)

    def failure(self, where: str, error: BaseException):
        """An exception while scanning `where`: corrupt input marks the message
        malformed; anything else is an internal failure for the caller."""
        if is_input_error(error):
            self.malformed("parser error: " + describe(where, error))
        elif len(self.model.errors) < 100:
            self.model.errors.append(describe(where, error))

    def room_for_part(self, in_archive: bool) -> bool:
        if len(self.model.parts) < self.limits.max_parts:
            return True
        if not self.part_limit_noted:
            self.part_limit_noted = True
            note = f"more than {self.limits.max_parts} parts; the rest not scanned"
            if in_archive:
                self.flag(FLAG_ARCHIVE_LIMIT, note)
            else:
                self.mime_limit(note)
        return False

    @staticmethod
    def _key(part: Part):
        return (len(part.payload), hash(part.payload), tuple(part.names), part.origin)

    def _found_keys(self) -> set:
        """Keys of every part found so far. Built only when an alternate reading
        asks: most messages have none, and the key hashes whole payloads."""
        parts = self.model.parts
        while self.parts_keyed < len(parts):
            self.seen_parts.add(self._key(parts[self.parts_keyed]))
            self.parts_keyed += 1
        return self.seen_parts

    def already_found(self, part: Part) -> bool:
        """True when an alternate reading meets a part the first reading found
        (checked before any costly work such as libmagic on it)."""
        return bool(self.alternate) and self._key(part) in self._found_keys()

    def add_part(self, part: Part) -> bool:
        """Append a part unless an alternate reading already found it."""
        if self.already_found(part):
            return False
        self.model.parts.append(part)
        return True

    def add_text(self, text: str):
        if not text:
            return
        key = hash(text)
        if self.alternate and key in self.seen_texts:
            return
        self.seen_texts.add(key)
        room = self.limits.max_text_chars - self.text_len
        if room <= 0:
            return
        text = text[:room]
        self.text_chunks.append(text)
        self.text_len += len(text) + 1


def parse_message(raw: bytes, limits: Limits = Limits()) -> MessageModel:
    """Parse raw message bytes into a MessageModel. Never raises.

    Corrupt input gives flags and notes; internal failures (bugs, codecs
    or libmagic that cannot load, memory) give model.errors, after which the
    model is incomplete and must not be trusted to deliver the message.
    """
    conversion_error = None
    if not isinstance(raw, bytes):
        try:
            raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        except Exception as error:      # a caller passed something that is not a message
            conversion_error, raw = error, b""
    model = MessageModel(raw_size=len(raw))
    ctx = _Context(model, limits)
    if conversion_error is not None:
        model.errors.append(describe("message bytes", conversion_error))
    try:
        _parse_top(raw, ctx)
    except RecursionError:
        ctx.mime_limit("structure too deeply nested to parse")
    except Exception as error:      # neither kind of failure may lose the message
        ctx.failure("message", error)
    model.body_text = " ".join(ctx.text_chunks)[:limits.max_text_chars]
    return model


def _parse_top(raw: bytes, ctx: _Context):
    strict, lenient = read_header_blocks(raw)
    model = ctx.model
    model.headers = [(name, decode_rfc2047(value)) for name, value in strict.fields]
    if lenient is not None:
        ctx.malformed("header block may end early: " + "; ".join(lenient.anomalies))
        known = set(strict.fields)
        model.headers += [(n, decode_rfc2047(v)) for n, v in lenient.fields if (n, v) not in known]
    elif strict.anomalies:
        ctx.malformed("message headers: " + "; ".join(strict.anomalies))
    subjects = model.header_values("subject")
    model.subject = subjects[0] if subjects else ""
    _entity(raw, strict, ctx, depth=0, prefix=[], origin="mime")
    if lenient is not None:
        ctx.alternate += 1
        try:
            _entity(raw, lenient, ctx, depth=0, prefix=[], origin="mime")
        finally:
            ctx.alternate -= 1


def _distinct(values):
    seen = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return seen


def _mime_headers(block: HeaderBlock) -> tuple[list[ParsedHeader], list[ParsedHeader], list[str]]:
    """A block's Content-Type and Content-Disposition headers parsed, and its
    distinct normalised Content-Transfer-Encodings ([] when none), each in
    order: one pass over the fields, each name lowered once."""
    content_types: list[ParsedHeader] = []
    dispositions: list[ParsedHeader] = []
    ctes: list[str] = []
    for name, value in block.fields:
        name = name.lower()
        if name == "content-type":
            content_types.append(parse_structured(value))
        elif name == "content-disposition":
            dispositions.append(parse_structured(value))
        elif name == "content-transfer-encoding":
            cte = normalise_cte(value)
            if cte not in ctes:
                ctes.append(cte)
    return content_types, dispositions, ctes


def _entity(data: bytes, block: HeaderBlock, ctx: _Context, depth: int, prefix: list[str],
            origin: str, default_type: str = "text/plain"):
    """Scan one MIME entity (headers already read) and everything inside it."""
    if depth > ctx.limits.max_mime_depth:
        ctx.mime_limit(f"MIME nesting deeper than {ctx.limits.max_mime_depth} (max_mime_depth); "
                       "inner parts not scanned")
        return
    content_types, dispositions, ctes = _mime_headers(block)
    for label, headers in (("Content-Type", content_types), ("Content-Disposition", dispositions)):
        if len(headers) > 1:
            ctx.malformed(f"duplicate {label} headers")
        for header in headers:
            if header.broken:
                ctx.malformed(f"{label}: " + "; ".join(header.broken))
    declared = _distinct([h.value for h in content_types if "/" in h.value])
    if content_types and not declared:
        ctx.malformed("Content-Type without a type/subtype")
    if not declared:
        declared = [default_type]
    body = data[block.body_start:]
    # (declared nearly always holds one type: no generator for the rest unless there is one)
    if declared[0].startswith("multipart/") or any(t.startswith("multipart/") for t in declared[1:]):
        if not _ENCRYPTED_TYPES.isdisjoint(declared):
            ctx.flag(FLAG_ENCRYPTED, "encrypted message part (" + declared[0] + ")")
        if _encoded_multipart(body, ctes, content_types, declared, ctx, depth, prefix, origin):
            return
    _leaf(body, ctes, ctx, depth, prefix, origin, declared, content_types, dispositions)


# --- multipart -----------------------------------------------------------------

def _encoded_multipart(body: bytes, ctes: list[str], content_types, declared, ctx: _Context,
                       depth: int, prefix, origin) -> bool:
    """A multipart, also read through its Content-Transfer-Encoding when it
    has one (`ctes`: the distinct normalised values): RFC 2045 forbids
    encoding a multipart, but some clients decode it anyway and others do
    not, so both readings are scanned."""
    found = _multipart(body, content_types, declared, ctx, depth, prefix, origin)
    encodings = [cte for cte in ctes if cte != "identity"]
    if not encodings:
        return found
    ctx.malformed(f"Content-Transfer-Encoding {', '.join(encodings)} on a multipart: "
                  "scanned as it is and decoded")
    for cte in encodings:
        decoded, _notes = decode_transfer(body, cte)
        ctx.alternate += 1
        try:
            found = _multipart(decoded, content_types, declared, ctx, depth, prefix, origin) or found
        finally:
            ctx.alternate -= 1
    return found


def _boundaries(content_types: list[ParsedHeader]) -> list[bytes]:
    values = []
    for header in content_types:
        values += header.get_all("boundary")
        values += rfc2231_values(header.params, "boundary")
    cleaned = []
    for value in values:
        for candidate in (value, value.strip(), clean_name(value)):
            if candidate:
                encoded = candidate.encode("utf-8", "surrogateescape")
                if encoded not in cleaned:
                    cleaned.append(encoded)
    return cleaned[:10]


def _delimiter_lines(body: bytes, boundary: bytes, limit: int) -> list[tuple[int, int, bool, bool]]:
    """Lines starting with --boundary: (line start, line end, closing, clean).

    clean is False when text follows the boundary on the line, which RFC 2046
    forbids but clients accept. A find() loop, several times faster than a
    multi-line regex on big bodies.
    """
    marker = b"--" + boundary
    marker_len = len(marker)
    body_len = len(body)
    found = []
    pos = 0
    while len(found) <= limit:
        start = body.find(marker, pos)
        if start < 0:
            break
        pos = start + marker_len
        if start and body[start - 1] != 0x0A:
            continue        # not at the start of a line
        newline = body.find(b"\n", pos)
        line_end = body_len if newline < 0 else newline
        rest = body[pos:line_end]
        closing = rest.startswith(b"--")
        clean = not (rest[2:] if closing else rest).strip(b" \t\r")
        found.append((start, line_end, closing, clean))
    return found


def _split(body: bytes, delimiters: list[tuple[int, int, bool, bool]]):
    """Bodies between delimiter lines: (parts, parts_after_close, closed, found)."""
    parts: list[bytes] = []
    after_close: list[bytes] = []
    closed = False
    for index, (_line_start, line_end, closing, _clean) in enumerate(delimiters):
        if closing:
            closed = True
            continue
        start = line_end + 1
        if index + 1 < len(delimiters):
            end = delimiters[index + 1][0]
            if body[end - 2:end] == b"\r\n":
                end -= 2
            elif body[end - 1:end] == b"\n":
                end -= 1
        else:
            end = len(body)
        (after_close if closed else parts).append(body[start:max(start, end)])
    return parts, after_close, closed, bool(delimiters)


def _multipart(body: bytes, content_types, declared, ctx: _Context, depth: int, prefix, origin) -> bool:
    """Scan a multipart body under every boundary reading; False if no reading found parts."""
    boundaries = _boundaries(content_types)
    if len(boundaries) > 1:
        ctx.malformed("several boundary parameters: each one scanned")
    if not boundaries:
        ctx.malformed("multipart without a boundary parameter")
    readings: list[list[bytes]] = []
    for boundary in boundaries:
        if _BOUNDARY_ODD_CHAR.search(boundary) or len(boundary) > 70:
            ctx.malformed("boundary with characters RFC 2046 does not allow")
        loose = _delimiter_lines(body, boundary, ctx.limits.max_parts)
        if len(loose) > ctx.limits.max_parts:
            ctx.mime_limit(f"more than {ctx.limits.max_parts} boundary lines (max_parts); "
                           "the rest not scanned")
        strict = [d for d in loose if d[3]]
        parts, after_close, closed, found = _split(body, strict)
        if found:
            if not closed:
                ctx.malformed("multipart without its final boundary")
            if after_close:
                ctx.malformed("parts after the final boundary")
            readings.append(parts + after_close)
        if len(loose) != len(strict):
            # Clients also accept junk after the boundary on the delimiter line.
            ctx.malformed("boundary line with trailing text")
            loose_parts, loose_after, _closed, _found = _split(body, loose)
            readings.append(loose_parts + loose_after)
    if not any(readings):
        guess = _BOUNDARY_GUESS.search(body)
        if guess:
            ctx.malformed("multipart boundary guessed from the body")
            lines = _delimiter_lines(body, guess.group(1).rstrip(), ctx.limits.max_parts)
            parts, after_close, _closed, _found = _split(body, lines)
            readings.append(parts + after_close)
    if not any(readings):
        return False
    child_default = "message/rfc822" if "multipart/digest" in declared else "text/plain"
    for number, parts in enumerate(readings):
        if number:
            ctx.alternate += 1
        try:
            for part_bytes in parts:
                _child(part_bytes, ctx, depth + 1, prefix, origin, child_default)
        finally:
            if number:
                ctx.alternate -= 1
    return True


def _child(part_bytes: bytes, ctx: _Context, depth: int, prefix, origin, default_type):
    strict, lenient = read_header_blocks(part_bytes)
    if lenient is not None:
        ctx.malformed("part header block may end early: " + "; ".join(lenient.anomalies))
    elif strict.anomalies and strict.fields:
        ctx.malformed("part headers: " + "; ".join(strict.anomalies))
    _entity(part_bytes, strict, ctx, depth, prefix, origin, default_type)
    if lenient is not None:
        ctx.alternate += 1
        try:
            _entity(part_bytes, lenient, ctx, depth, prefix, origin, default_type)
        finally:
            ctx.alternate -= 1


# --- leaves --------------------------------------------------------------------

def _leaf(body: bytes, ctes: list[str], ctx: _Context, depth: int, prefix: list[str], origin: str,
          declared: list[str], content_types, dispositions):
    ctes = ctes or ["identity"]
    if len(ctes) > 1:
        ctx.malformed("conflicting Content-Transfer-Encoding headers: each one decoded")
    names = _distinct(name_candidates(dispositions, "filename") + name_candidates(content_types, "name"))
    disposition = dispositions[0].value if dispositions else ""
    charset = None
    for header in content_types:
        charset = charset or header.get("charset")
    declared_type = declared[0]
    for number, cte in enumerate(ctes):
        payload, notes = decode_transfer(body, cte)
        if notes:
            ctx.malformed(f"{names[0] if names else declared_type}: " + "; ".join(notes))
        part = Part(
            path=prefix + [names[0] if names else declared_type],
            payload=payload,
            declared_type=declared_type,
            declared_types=list(declared),
            names=list(names),
            origin=origin,
            depth=depth,
            charset=charset,
            notes=notes,
        )
        text_body = (declared_type in _TEXT_BODY_TYPES and not names
                     and not disposition.startswith("attachment"))
        part.is_text_body = text_body
        part.is_attachment = not text_body and (
            bool(names) or disposition.startswith("attachment") or not declared_type.startswith("text/"))
        if number:
            ctx.alternate += 1
        try:
            _leaf_reading(part, ctx, text_body)
        finally:
            if number:
                ctx.alternate -= 1


def _leaf_reading(part: Part, ctx: _Context, text_body: bool):
    if not _ENCRYPTED_TYPES.isdisjoint(part.declared_types):
        ctx.flag(FLAG_ENCRYPTED, f"encrypted content ({part.declared_type})")
    if ctx.already_found(part):
        return
    if text_body:
        if not ctx.room_for_part(False):
            return
        part.true_type, part.mime = true_type_of(part.payload, "", guess_scripts=False)
        if not ctx.add_part(part):
            return
        _text_body(part, ctx)
        return
    if part.declared_type in ("message/rfc822", "message/global", "message/news"):
        if ctx.room_for_part(False) and ctx.add_part(part):
            part.true_type, part.mime = "email", "message/rfc822"
            _nested_message(part, ctx)
        return
    _add_file(part, ctx, archive_depth=0)


def _text_body(part: Part, ctx: _Context):
    """Read a body text part; a failure there costs that part, not the message.
    (try/except rather than a context manager: this runs for every part.)"""
    try:
        _text_body_unguarded(part, ctx)
    except RecursionError:
        raise       # unwind to parse_message, which reports the nesting
    except Exception as error:
        ctx.failure("text of " + "/".join(part.path), error)


def _text_body_unguarded(part: Part, ctx: _Context):
    payload = part.payload
    html = part.declared_type == "text/html"
    uu_files = _uuencoded(payload, ctx)
    if uu_files:
        # The encoded lines are file data, not text a person reads.
        pieces, pos = [], 0
        for uu in uu_files:
            pieces.append(payload[pos:uu.start])
            pos = uu.end
        pieces.append(payload[pos:])
        payload = b"\n".join(pieces)
    if _PGP_ARMOR in payload:
        ctx.flag(FLAG_ENCRYPTED, "PGP-encrypted text")
    text = decode_bytes(payload, part.charset)
    ctx.add_text(html_to_text(text) if html else normalise_whitespace(text))
    if html and (b"begin" in part.payload or b"&#" in part.payload):
        # In HTML the lines a client shows may differ from the source lines
        # (<br>, <p>, entities for the & < > that uuencode uses): look there too.
        shown = html_to_lines(decode_bytes(part.payload, part.charset)).encode("utf-8", "surrogateescape")
        known = {(uu.name, uu.payload) for uu in uu_files}
        uu_files += [uu for uu in _uuencoded(shown, ctx) if (uu.name, uu.payload) not in known]
    for uu in uu_files:
        names = _distinct(clean_name(reading) for reading in nul_readings(uu.name)) or ["uuencoded"]
        name = names[0]
        uu_part = Part(path=part.path[:-1] + [name], payload=uu.payload, names=names,
                       is_attachment=True, origin="uuencode", depth=part.depth)
        _add_file(uu_part, ctx, archive_depth=0)


def _uuencoded(data: bytes, ctx: _Context):
    files = find_uuencoded(data)
    if len(files) > MAX_UU_FILES:
        ctx.mime_limit(f"more than {MAX_UU_FILES} uuencoded files in a text part; the rest not scanned")
        files = files[:MAX_UU_FILES]
    return files


def _add_file(part: Part, ctx: _Context, archive_depth: int):
    """Record a file-like part, then look inside it (archive members, nested
    mail); a failure there costs that part, not the message."""
    try:
        _add_file_unguarded(part, ctx, archive_depth)
    except RecursionError:
        raise       # unwind to parse_message, which reports the nesting
    except Exception as error:
        ctx.failure("part " + "/".join(part.path), error)


def _add_file_unguarded(part: Part, ctx: _Context, archive_depth: int):
    if ctx.already_found(part) or not ctx.room_for_part(part.origin == "archive"):
        return
    if not part.encrypted:
        part.true_type, part.mime = true_type_of(part.payload, part.name)
    if part.true_type in ("document", "office-macro", "pdf"):
        _document_exceptions(part, ctx)
    if not ctx.add_part(part):
        return
    if part.true_type == "archive":
        _expand_archive(part, ctx, archive_depth)
    elif part.true_type in ("document", "office-macro") and part.payload[:4] == b"PK\x03\x04":
        # A docx/xlsx/odt is a zip: what else it carries (an .exe stored next to [Content_Types].xml,
        # an embedded object) is scanned like an archive member; only its words come from the document.
        _expand_archive(part, ctx, archive_depth, inside_document=True)
    elif part.true_type == "email" and part.mime == "message/rfc822" and looks_like_email(part.payload):
        _nested_message(part, ctx)


def _document_exceptions(part: Part, ctx: _Context):
    """Password protection and damage of an Office file or PDF."""
    facts = document_facts(part.payload)
    label = part.name or part.declared_type or "document"
    if facts.encrypted:
        part.encrypted = True
        ctx.flag(FLAG_ENCRYPTED, f"{label}: password-protected document")
    if facts.damaged:
        _unscannable(part, ctx, f"{label}: {facts.damaged}")
        ctx.malformed(f"{label}: {facts.damaged}")


def _unscannable(part: Part, ctx: _Context, note: str):
    part.unscannable = True
    ctx.flag(FLAG_UNSCANNABLE, note)


def _expand_archive(part: Part, ctx: _Context, archive_depth: int, inside_document: bool = False):
    if archive_depth >= ctx.limits.archive_max_depth:
        ctx.flag(FLAG_ARCHIVE_LIMIT, f"{part.name or 'archive'}: archives nested deeper than "
                                     f"{ctx.limits.archive_max_depth}; not expanded")
        return
    expansion = archives.expand(part.payload, part.name, ctx.budget)
    if expansion is None:
        if part.true_type == "archive":     # rar, cab, arj, ace...: a format we do not read
            _unscannable(part, ctx, f"{part.name or 'archive'}: {part.mime} cannot be opened; content not scanned")
        return
    for note in expansion.unreadable_notes[:1]:
        _unscannable(part, ctx, f"{part.name}: {note}")
    for note in expansion.encrypted_notes:
        part.encrypted = True
        ctx.flag(FLAG_ENCRYPTED, f"{part.name}: {note}")
    for note in expansion.limit_notes:
        ctx.flag(FLAG_ARCHIVE_LIMIT, f"{part.name}: {note}")
    for note in expansion.malformed_notes:
        ctx.malformed(f"{part.name}: {note}")
    for member in expansion.members:
        child = Part(path=part.path + [member.names[0]], payload=member.payload,
                     names=_distinct(reading for name in member.names for reading in nul_readings(name)),
                     is_attachment=True, origin="archive",
                     depth=part.depth + 1, encrypted=member.encrypted, notes=list(member.notes),
                     inside_document=inside_document or part.inside_document)
        if member.encrypted:
            ctx.flag(FLAG_ENCRYPTED, f"{part.name}: encrypted member {member.names[0]}")
        _add_file(child, ctx, archive_depth + 1)


def _nested_message(part: Part, ctx: _Context):
    """Scan an attached message; its parts get the attachment's path as prefix."""
    depth = part.depth + 1
    if depth > ctx.limits.max_mime_depth:
        ctx.mime_limit(f"messages nested deeper than {ctx.limits.max_mime_depth} (max_mime_depth); "
                       "not scanned")
        return
    strict, lenient = read_header_blocks(part.payload)
    if lenient is not None:
        ctx.malformed("attached message header block may end early")
    prefix = list(part.path)
    subject = strict.values("subject")
    if subject:
        ctx.add_text(normalise_whitespace(decode_rfc2047(subject[0])))
    _entity(part.payload, strict, ctx, depth, prefix, "message")
    if lenient is not None:
        ctx.alternate += 1
        try:
            _entity(part.payload, lenient, ctx, depth, prefix, "message")
        finally:
            ctx.alternate -= 1
