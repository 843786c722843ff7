"""The message model that the MIME layer builds and every later stage reads.

The parser (imss_milter.mime.parse_message) turns raw bytes into a
MessageModel: a flat list of Parts (MIME leaves, archive members, nested
message parts, uuencoded files) plus the decoded text and headers that
keyword conditions search. Policy and engines read only this model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# True-type categories (SPEC §4). The parser gives every part exactly one.
TRUE_TYPE_CATEGORIES = (
    "executable", "script", "archive", "document", "office-macro", "pdf",
    "image", "audio", "video", "text", "html", "email", "unknown",
)

# Message-level flags that conditions can test (SPEC §4 "scanning exceptions").
FLAG_MALFORMED = "malformed"
FLAG_ENCRYPTED = "encrypted"
# A scanning limit was exceeded (archive or MIME: nesting depth, part count,
# expansion size, ratio, entries...): part of the message was not scanned.
# The name predates MIME limits and is kept because rules test it.
FLAG_ARCHIVE_LIMIT = "archive.limit_exceeded"
# An archive or document the scanner cannot open (rar, cab, arj, ace, a damaged
# zip, 7z or OLE file): what it holds was not scanned. Rules test it under this
# name (the key `archive.unscannable`), next to archive.limit_exceeded.
FLAG_UNSCANNABLE = "archive.unscannable"


@dataclass(frozen=True)
class Limits:
    """Bounds on everything an attacker controls (SPEC §8)."""

    max_mime_depth: int = 20            # nesting of multiparts and message/rfc822
    max_parts: int = 1000               # leaves + archive members, whole message
    archive_max_depth: int = 5          # archives inside archives
    archive_max_entries: int = 1000     # members per archive
    archive_max_expanded: int = 200 * 1024 * 1024   # bytes expanded per message
    archive_max_ratio: int = 100        # expanded/compressed per member
    archive_ratio_min_bytes: int = 1024 * 1024   # the ratio limit applies past this size (small text compresses well)
    max_text_chars: int = 5_000_000     # text kept for keyword conditions
    regex_timeout: float = 0.25         # seconds per expression match


@dataclass
class Part:
    """One file-like thing found in the message.

    Leaves of the MIME tree, members of archives, the payload of nested
    messages and inline uuencoded files are all Parts.
    """

    path: list[str]                 # display path, outermost first: ["a.zip", "a.pdf.exe"]
    payload: bytes                  # fully decoded content
    declared_type: str = ""         # lower-case Content-Type as declared ("" for archive members)
    declared_types: list[str] = field(default_factory=list)   # every distinct declared type (duplicate headers)
    names: list[str] = field(default_factory=list)   # every candidate file name, decoded
    true_type: str = "unknown"      # a category from TRUE_TYPE_CATEGORIES
    mime: str = "application/octet-stream"           # content type found from the bytes (libmagic)
    is_attachment: bool = False     # a file (named, non-inline, or an archive member) vs a body text part
    is_text_body: bool = False      # a text/plain or text/html body whose text went into MessageModel.body_text
    origin: str = "mime"            # mime | archive | uuencode | message
    depth: int = 0                  # MIME/archive nesting depth
    encrypted: bool = False         # an encrypted archive or member
    unscannable: bool = False       # a container whose content could not be read (see FLAG_UNSCANNABLE)
    charset: str | None = None
    notes: list[str] = field(default_factory=list)    # parse notes: "base64 had junk", "zip names disagree"...
    inside_document: bool = False   # a member of a zip-based document (docx, odt...): its words are read
                                    # through the document, but its type and name are checked like any file

    @property
    def size(self) -> int:
        return len(self.payload)

    @property
    def name(self) -> str:
        """The name shown to people: the first candidate, or ''."""
        return self.names[0] if self.names else ""

    def to_json(self) -> dict:
        """The `attachments` entry of `scan --json` (SPEC §5)."""
        return {
            "name": self.name,
            "names": list(self.names),
            "declared_type": self.declared_type,
            "true_type": self.true_type,
            "mime": self.mime,
            "size": self.size,
            "path": list(self.path),
        }


@dataclass
class MessageModel:
    """Everything the policy engine may ask about one message."""

    raw_size: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # top-level, decoded (RFC 2047), in order
    subject: str = ""               # decoded subject ("" when absent)
    parts: list[Part] = field(default_factory=list)   # every Part, depth first
    body_text: str = ""             # decoded, HTML-stripped, whitespace-normalised text of body parts
    flags: set[str] = field(default_factory=set)      # FLAG_* values
    notes: list[str] = field(default_factory=list)    # why a flag was set, for findings/logs
    # Internal failures (a scanner bug, a codec or library that cannot load,
    # memory): "where: Type: message". Not caused by the input, so the scan is
    # incomplete and untrustworthy: the caller answers tempfail, never delivers.
    errors: list[str] = field(default_factory=list)

    @property
    def attachments(self) -> list[Part]:
        return [p for p in self.parts if p.is_attachment]

    def header_values(self, name: str) -> list[str]:
        """Every decoded value of a header (case-insensitive name)."""
        lname = name.lower()
        return [v for (n, v) in self.headers if n.lower() == lname]
