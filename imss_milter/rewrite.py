"""Body rewriting for the insert_stamp and strip_attachments actions (SPEC §4).

Pure functions: raw message bytes in, a Rewrite out (the new body plus the
top-level MIME headers that changed), which the milter sends with
replacebody/chgheader at end of message. Parts that are not touched are
written back as they were; a touched text part is re-encoded in its own
charset when the stamp fits, else in UTF-8, with a transfer encoding that
keeps lines short and 7-bit safe where the original was.

Signed or encrypted content (multipart/signed, application/pkcs7-mime,
multipart/encrypted) is never stamped: changing a signed body invalidates
its signature, and an encrypted body cannot be read.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
import io
import quopri
import re
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message

from .mime.charsets import decode_bytes, normalise_charset
from .mime.headers import name_candidates, parse_structured

TOP_LEVEL_MIME_HEADERS = ("MIME-Version", "Content-Type", "Content-Transfer-Encoding")
SIGNED_OR_ENCRYPTED = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
                       "application/x-pkcs7-mime")
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_HTML_CLOSE = re.compile(r"</html\s*>", re.IGNORECASE)


@dataclass
class Rewrite:
    """What changed: the new body (CRLF lines) and top-level headers to set (None = remove)."""

    body: bytes
    headers: dict[str, str | None] = field(default_factory=dict)
    stamped: int = 0                        # text parts that received the stamp
    stripped: list[str] = field(default_factory=list)   # names of the parts replaced by a note
    notes: list[str] = field(default_factory=list)       # why something was not done


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def content_type(node: Message) -> str:
    return node.get_content_type().lower()


def is_signed_or_encrypted(node: Message) -> bool:
    return content_type(node) in SIGNED_OR_ENCRYPTED


def node_names(node: Message) -> list[str]:
    """The decoded file names of a MIME node, the way the scanner names parts."""
    dispositions = [parse_structured(str(v)) for v in node.get_all("Content-Disposition", [])]
    types = [parse_structured(str(v)) for v in node.get_all("Content-Type", [])]
    return name_candidates(dispositions, "filename") + name_candidates(types, "name")


def is_attachment(node: Message) -> bool:
    disposition = str(node.get("Content-Disposition", "")).strip().lower()
    return disposition.startswith("attachment") or bool(node_names(node))


# -- stamping -------------------------------------------------------------------------------

def stamp_text(text: str, stamp: str, html_body: bool) -> str:
    """The text with the stamp at its end: a paragraph before </body> for HTML, a last line for plain."""
    newline = "\r\n" if "\r\n" in text else "\n"
    if not html_body:
        body = text.rstrip("\r\n")
        return f"{body}{newline}{newline}{stamp}{newline}"
    block = (f'<div class="imss-stamp"><p>{html.escape(stamp).replace(chr(10), "<br>")}</p></div>')
    for pattern in (_BODY_CLOSE, _HTML_CLOSE):
        matches = list(pattern.finditer(text))
        if matches:
            where = matches[-1].start()
            return text[:where] + block + newline + text[where:]
    # HTML without </body> or </html> (a fragment): the stamp goes at the end, still valid HTML
    return text.rstrip("\r\n") + newline + block + newline


def encode_text(text: str, charset: str, transfer: str) -> tuple[bytes, str]:
    """Encode text for a part: (payload, transfer encoding). Keeps base64/QP; 7bit only when it is."""
    data = text.replace("\r\n", "\n").encode(charset)
    if transfer == "base64":
        return base64.encodebytes(data), "base64"
    plain_7bit = data.isascii() and all(len(line) <= 900 for line in data.split(b"\n"))
    if transfer in ("7bit", "") and plain_7bit:
        return data, "7bit"
    if transfer == "8bit" and all(len(line) <= 900 for line in data.split(b"\n")):
        return data, "8bit"
    return quopri.encodestring(data), "quoted-printable"


def restamp_part(node: Message, stamp: str) -> None:
    """Append the stamp to one text/plain or text/html leaf, in place."""
    declared = node.get_content_charset()
    payload = node.get_payload(decode=True) or b""
    text = decode_bytes(payload, declared)
    new_text = stamp_text(text, stamp, content_type(node) == "text/html")
    codec = normalise_charset(declared) or "ascii"
    label = declared or "us-ascii"         # keep the label as the sender wrote it when it still fits
    try:
        new_text.encode(codec)
    except (UnicodeEncodeError, LookupError):
        codec = label = "utf-8"    # the stamp (or replaced junk) does not fit the original charset
    transfer = str(node.get("Content-Transfer-Encoding", "")).strip().lower()
    data, transfer = encode_text(new_text, codec, transfer)
    # compat32 keeps str payloads; BytesGenerator writes 8-bit bytes back from surrogate escapes
    node.set_payload(data.decode("ascii", "surrogateescape"))
    if "Content-Type" in node:
        if label != declared:
            node.set_param("charset", label)
    else:
        node["Content-Type"] = f'text/plain; charset="{label}"'
    del node["Content-Transfer-Encoding"]
    node["Content-Transfer-Encoding"] = transfer


def stamp_body(node: Message, stamp: str, result: Rewrite) -> None:
    """Stamp the message body: both sides of an alternative, the root of related, the first part of mixed."""
    kind = content_type(node)
    if is_signed_or_encrypted(node):
        result.notes.append(f"{kind} content is not stamped (the signature or encryption would break)")
        return
    if node.is_multipart():
        children = node.get_payload()
        if not children:
            return
        if kind == "multipart/alternative":
            for child in children:
                stamp_body(child, stamp, result)
        else:
            stamp_body(children[0], stamp, result)
        return
    if kind in ("text/plain", "text/html") and not is_attachment(node):
        restamp_part(node, stamp)
        result.stamped += 1


# -- stripping ------------------------------------------------------------------------------

def removal_note(name: str, reference: str | None) -> Message:
    note = Message()
    note["Content-Type"] = 'text/plain; charset="utf-8"'
    note["Content-Transfer-Encoding"] = "quoted-printable"
    note["Content-Disposition"] = "inline"
    text = (f"The attachment {name!s} was removed by the mail gateway's security policy.\n"
            + (f"The original message is held under reference {reference}; ask your administrator "
               f"if you need it.\n" if reference else ""))
    note.set_payload(quopri.encodestring(text.encode("utf-8")).decode("ascii"))
    return note


def node_label(node: Message) -> str:
    names = node_names(node)
    return names[0] if names else content_type(node)


def strip_nodes(node: Message, targets: set[str], everything: bool, reference: str | None,
                result: Rewrite, top: bool = False) -> Message:
    """node with matching attachments replaced by notes (a matched node is replaced whole)."""
    label = node_label(node)
    matched = (label.lower() in targets or any(n.lower() in targets for n in node_names(node))) if targets \
        else False
    if not top and (matched or (everything and is_attachment(node))):
        result.stripped.append(label)
        return removal_note(label, reference)
    if top and (matched or (everything and not node.is_multipart() and is_attachment(node))):
        # the whole message is the attachment: its body becomes the note
        result.stripped.append(label)
        note = removal_note(label, reference)
        for name in TOP_LEVEL_MIME_HEADERS[1:] + ("Content-Disposition",):
            del node[name]
        node["Content-Type"] = note["Content-Type"]
        node["Content-Transfer-Encoding"] = note["Content-Transfer-Encoding"]
        node.set_payload(note.get_payload())
        return node
    if node.is_multipart() and not is_signed_or_encrypted(node):
        node.set_payload([strip_nodes(child, targets, everything, reference, result)
                          for child in node.get_payload()])
    return node


# -- the whole message ----------------------------------------------------------------------

def serialise_body(message: Message) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(message, linesep="\r\n")
    data = buffer.getvalue()
    cut = data.find(b"\r\n\r\n")
    return data[cut + 4:] if cut >= 0 else b""


def header_changes(before: dict, message: Message) -> dict:
    changes = {}
    for name in TOP_LEVEL_MIME_HEADERS:
        after = message.get(name)
        after = None if after is None else str(after)
        if after != before.get(name):
            changes[name] = after
    return changes


def rewrite(raw: bytes, stamp: str | None = None, strip: tuple[str, ...] | None = None,
            reference: str | None = None) -> Rewrite | None:
    """Apply a stamp and/or stripping; None when nothing changed (then the body must stay as it is).

    strip: None = no stripping; () = every attachment; else the "/"-joined part paths the
    policy matched (only the first component names a MIME part of this message).
    """
    message = parse(raw)
    before = {name: (None if message.get(name) is None else str(message.get(name)))
              for name in TOP_LEVEL_MIME_HEADERS}
    result = Rewrite(body=b"")
    if strip is not None:
        targets = {path.split("/")[0].lower() for path in strip if path}
        strip_nodes(message, targets, not targets, reference, result, top=True)
        if targets and not result.stripped:
            # the matched part could not be found by name (the scanner saw it differently): be safe
            result.notes.append("matched parts not found by name; every attachment was removed")
            strip_nodes(message, set(), True, reference, result, top=True)
    if stamp:
        stamp_body(message, stamp, result)
    if not result.stamped and not result.stripped:
        return None
    if result.stamped and "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"      # a charset or encoding we set only counts under MIME
    result.body = serialise_body(message)
    result.headers = header_changes(before, message)
    return result
