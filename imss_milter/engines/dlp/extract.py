"""Text of documents for DLP and attachment.content: OOXML, OpenDocument, PDF, RTF, legacy Office, UTF-16 text.

extract_document(part) returns an Extraction (text, kind, problem) for the
formats this module reads, or None for anything else (plain text, HTML,
CSV: the policy layer's part_text() already decodes those). `problem`
says why a document could not be read (encrypted, corrupt, over budget);
the text is then whatever was read before the problem.

Every reader is bounded: input size, expanded XML size, characters of
text, and a deadline checked between pages/members, so a hostile document
costs at most the budget.
"""

from __future__ import annotations

import html
import io
import logging
import re
import time
import zipfile
from dataclasses import dataclass

# pypdf warns about every malformed object; malformed input is routine here, not news for the log
logging.getLogger("pypdf").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Budget:
    max_document_bytes: int = 50 * 1024 * 1024    # documents larger than this are not opened
    max_expanded_bytes: int = 100 * 1024 * 1024   # XML read out of one OOXML/ODF package
    max_chars: int = 5_000_000                    # text kept per document
    max_seconds: float = 10.0                     # for all documents of one message
    max_pdf_pages: int = 2000


@dataclass
class Extraction:
    text: str
    kind: str                       # docx, xlsx, pptx, odf, pdf, rtf, ole, utf16
    problem: str | None = None      # "encrypted", "corrupt: ...", "time budget exceeded", ...

    def __post_init__(self):
        self.text = self.text or ""


class _OverBudget(Exception):
    pass


DOCUMENT_EXTENSIONS = {".docx": "docx", ".docm": "docx", ".xlsx": "xlsx", ".xlsm": "xlsx", ".pptx": "pptx",
                       ".pptm": "pptx", ".odt": "odf", ".ods": "odf", ".odp": "odf", ".pdf": "pdf", ".rtf": "rtf"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")


def claimed_kind(part) -> str | None:
    """The document kind a part's names claim (for 'could not be read' when the bytes disagree)."""
    for name in part.names:
        lowered = name.lower()
        for extension, kind in DOCUMENT_EXTENSIONS.items():
            if lowered.endswith(extension):
                return kind
    return None


def extract_document(part, budget: Budget = Budget(), deadline: float | None = None) -> Extraction | None:
    """The text of a document part, or None when the part is not a document this module reads."""
    payload = part.payload
    deadline = deadline if deadline is not None else time.monotonic() + budget.max_seconds
    claimed = claimed_kind(part)
    if part.encrypted:
        return Extraction("", claimed or "encrypted", "encrypted")
    if len(payload) > budget.max_document_bytes and (claimed or _sniff(payload)):
        return Extraction("", claimed or _sniff(payload), f"too large to read ({len(payload)} bytes)")
    kind = _sniff(payload)
    if kind is None and claimed and payload.startswith(b"PK\x03\x04"):
        kind = "package"            # a package whose first member is unusual: let the zip reader judge
    if kind is None:
        if claimed and part.true_type not in ("text", "html"):
            return Extraction("", claimed, "corrupt: content does not match the document type")
        if payload[:2] in (b"\xff\xfe", b"\xfe\xff") and part.true_type in ("text", "unknown"):
            return Extraction(_cut(payload.decode("utf-16", "replace").lstrip("\ufeff"), budget), "utf16")
        return None
    if time.monotonic() > deadline:
        return Extraction("", kind, "time budget exceeded")
    try:
        if kind == "pdf":
            return _pdf(payload, budget, deadline)
        if kind == "rtf":
            return Extraction(_cut(rtf_to_text(payload.decode("latin-1"), budget.max_chars), budget), "rtf")
        if kind == "ole":
            return _ole(payload, budget)
        return _package(payload, budget, deadline, claimed)
    except _OverBudget as exc:
        return Extraction("", kind, str(exc))
    except Exception as exc:   # noqa: BLE001 - a broken document is a finding, never a crash
        return Extraction("", kind, f"corrupt: {type(exc).__name__}: {exc}"[:200])


def _sniff(payload: bytes) -> str | None:
    head = payload[:1024]
    if head.lstrip()[:5] == b"%PDF-" or b"%PDF-" in head:
        return "pdf"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith(_OLE_MAGIC):
        return "ole"
    if head.startswith(b"PK\x03\x04") and (b"[Content_Types].xml" in payload[:65536] or
                                           b"mimetype" in head[:64] and b"opendocument" in head):
        return "package"
    return None


def _cut(text: str, budget: Budget) -> str:
    return text[: budget.max_chars]


# ---------------------------------------------------------------- OOXML and OpenDocument

_TAG = re.compile(r"<[^<>]*>")     # XML: "<" cannot occur inside a tag; stopping there keeps this linear
_DIGITS = re.compile(r"\d+")
_WORD_BREAKS = re.compile(r"</w:p>|<w:br\b[^<>]*/>|<w:cr\b[^<>]*/>|</w:tr>")
_WORD_TABS = re.compile(r"<w:tab\b[^<>]*/>|</w:tc>")
_SLIDE_BREAKS = re.compile(r"</a:p>|<a:br\b[^<>]*/>|</a:tr>")
_ODF_BREAKS = re.compile(r"</text:p>|</text:h>|<text:line-break\b[^>]*/>|</table:table-row>|</text:list-item>")
_ODF_TABS = re.compile(r"<text:tab\b[^>]*/>|</table:table-cell>")
_ODF_SPACES = re.compile(r"<text:s\b[^>]*/>")
_CELL = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_ROW_END = re.compile(r"</row>")
_VALUE = re.compile(r"<v>(.*?)</v>", re.S)
_SHARED_STRING = re.compile(r"<si>(.*?)</si>", re.S)


def _natural(name: str) -> list:
    return [int(d) for d in _DIGITS.findall(name)] + [name]


def _xml_text(xml: str, breaks: re.Pattern | None = None, tabs: re.Pattern | None = None) -> str:
    if breaks is not None:
        xml = breaks.sub("\n", xml)
    if tabs is not None:
        xml = tabs.sub("\t", xml)
    # runs of one word are split over several tags: tags go away without a space
    return html.unescape(_TAG.sub("", xml))


class _PackageReader:
    """Members of a zip package, read with a bound on the bytes expanded."""

    def __init__(self, payload: bytes, budget: Budget, deadline: float):
        self.archive = zipfile.ZipFile(io.BytesIO(payload))
        self.names = self.archive.namelist()
        self.left = budget.max_expanded_bytes
        self.deadline = deadline

    def read(self, name: str) -> str:
        if time.monotonic() > self.deadline:
            raise _OverBudget("time budget exceeded")
        info = self.archive.getinfo(name)
        if info.flag_bits & 0x1:
            raise _OverBudget("encrypted")
        with self.archive.open(info) as member:
            data = member.read(self.left + 1)
        if len(data) > self.left:
            raise _OverBudget("expanded size over the budget")
        self.left -= len(data)
        return data.decode("utf-8", "replace")

    def matching(self, pattern: str) -> list[str]:
        compiled = re.compile(pattern)
        return sorted((n for n in self.names if compiled.fullmatch(n)), key=_natural)


def _package(payload: bytes, budget: Budget, deadline: float, claimed: str | None) -> Extraction | None:
    reader = _PackageReader(payload, budget, deadline)
    names = set(reader.names)
    if not names & {"[Content_Types].xml", "mimetype", "content.xml"}:
        # a plain zip (perhaps holding documents, stored): its members are parts of their own
        return Extraction("", claimed, "corrupt: not an office package") if claimed else None
    if "word/document.xml" in names:
        kind, texts = "docx", [_xml_text(reader.read(n), _WORD_BREAKS, _WORD_TABS) for n in reader.matching(
            r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml")]
    elif "xl/workbook.xml" in names:
        kind, texts = "xlsx", _xlsx(reader)
    elif "ppt/presentation.xml" in names:
        kind, texts = "pptx", [_xml_text(reader.read(n), _SLIDE_BREAKS) for n in reader.matching(
            r"ppt/(slides/slide|notesSlides/notesSlide)\d+\.xml")]
    elif "content.xml" in names or "META-INF/manifest.xml" in names:
        if "META-INF/manifest.xml" in names and "encryption-data" in reader.read("META-INF/manifest.xml"):
            return Extraction("", "odf", "encrypted")
        kind = "odf"
        texts = [_xml_text(_ODF_SPACES.sub(" ", reader.read(n)), _ODF_BREAKS, _ODF_TABS)
                 for n in ("content.xml", "styles.xml") if n in names]
    else:
        return Extraction("", "package", "corrupt: unknown office package")
    return Extraction(_cut("\n".join(texts), budget), kind)


def _xlsx(reader: _PackageReader) -> list[str]:
    shared = []
    if "xl/sharedStrings.xml" in reader.names:
        shared = [html.unescape(_TAG.sub("", item)) for item in _SHARED_STRING.findall(reader.read("xl/sharedStrings.xml"))]
    texts = []
    for name in reader.matching(r"xl/worksheets/sheet\d+\.xml"):
        rows = []
        for row in _ROW_END.split(reader.read(name)):
            cells = []
            for attributes, inner in _CELL.findall(row):
                inner = inner or ""
                if 't="s"' in attributes:
                    value = _VALUE.search(inner)
                    index = int(value.group(1)) if value and value.group(1).strip().isdigit() else -1
                    cells.append(shared[index] if 0 <= index < len(shared) else "")
                elif 't="inlineStr"' in attributes:
                    cells.append(html.unescape(_TAG.sub("", inner)))
                else:
                    value = _VALUE.search(inner)
                    cells.append(html.unescape(value.group(1)) if value else "")
            rows.append("\t".join(cells))
        texts.append("\n".join(rows))
    for name in reader.matching(r"xl/comments\d+\.xml"):
        texts.append(_xml_text(reader.read(name), re.compile(r"</comment>")))
    return texts


# ---------------------------------------------------------------- PDF

def _pdf(payload: bytes, budget: Budget, deadline: float) -> Extraction:
    import pypdf   # imported on first PDF: most processes never read one

    reader = pypdf.PdfReader(io.BytesIO(payload), strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")     # many PDFs are encrypted with an empty user password
        except Exception:   # noqa: BLE001 - unsupported algorithm or broken encryption dictionary
            opened = 0
        if not opened:
            return Extraction("", "pdf", "encrypted")
    texts, size = [], 0
    for number, page in enumerate(reader.pages):
        if number >= budget.max_pdf_pages:
            return Extraction("\n".join(texts), "pdf", f"only the first {budget.max_pdf_pages} pages were read")
        if time.monotonic() > deadline:
            return Extraction("\n".join(texts), "pdf", "time budget exceeded")
        text = page.extract_text() or ""
        texts.append(text)
        size += len(text)
        if size >= budget.max_chars:
            break
    return Extraction(_cut("\n".join(texts), budget), "pdf")


# ---------------------------------------------------------------- legacy Office (OLE)

_ASCII_RUN = re.compile(rb"[\x20-\x7e\t\r\n]{4,}")
_UTF16_RUN = re.compile(rb"(?:[\x20-\x7e\t\r\n]\x00){4,}")


def _ole(payload: bytes, budget: Budget) -> Extraction:
    """Legacy .doc/.xls/.ppt: their text is stored as 8-bit or UTF-16LE runs; encrypted ones say so."""
    if _ENCRYPTED_PACKAGE in payload:
        return Extraction("", "ole", "encrypted")
    runs = [run.decode("utf-16-le") for run in _UTF16_RUN.findall(payload)]
    runs += [run.decode("latin-1") for run in _ASCII_RUN.findall(payload)]
    return Extraction(_cut("\n".join(runs), budget), "ole")


# ---------------------------------------------------------------- RTF

_RTF_TOKEN = re.compile(r"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)|[\r\n]+",
                        re.S)
_RTF_SKIP = {"fonttbl", "colortbl", "stylesheet", "info", "pict", "object", "objdata", "themedata",
             "datastore", "listtable", "listoverridetable", "rsidtbl", "generator", "xmlnstbl", "latentstyles"}
_RTF_BREAKS = {"par": "\n", "line": "\n", "row": "\n", "sect": "\n", "page": "\n", "tab": "\t", "cell": "\t",
               "emdash": "\u2014", "endash": "\u2013", "bullet": "\u2022", "lquote": "\u2018", "rquote": "\u2019",
               "ldblquote": "\u201c", "rdblquote": "\u201d", "~": "\u00a0"}


def rtf_to_text(source: str, max_chars: int = 5_000_000) -> str:
    """The visible text of an RTF document: groups, destinations, \\'hh and \\uN escapes, \\ucN skips."""
    out: list[str] = []
    size = 0
    skipping = False
    unicode_skip = 1
    pending_skip = 0
    codepage = "cp1252"
    stack: list[tuple[bool, int]] = []
    for control, argument, hex_byte, symbol, brace, literal in _RTF_TOKEN.findall(source):
        if brace == "{":
            stack.append((skipping, unicode_skip))
            continue
        if brace == "}":
            if stack:
                skipping, unicode_skip = stack.pop()
            pending_skip = 0
            continue
        if pending_skip and (hex_byte or literal):
            # characters after \uN are the fallback for readers without Unicode
            if hex_byte:
                pending_skip -= 1
                continue
            cut = min(pending_skip, len(literal))
            literal, pending_skip = literal[cut:], pending_skip - cut
            if not literal:
                continue
        piece = ""
        if control:
            if control in _RTF_SKIP:
                skipping = True
            elif control == "uc" and argument:
                unicode_skip = int(argument)
            elif control == "ansicpg" and argument:
                codepage = f"cp{argument}"
            elif control == "u" and argument:
                piece = chr(int(argument) % 65536)
                pending_skip = unicode_skip
            else:
                piece = _RTF_BREAKS.get(control, "")
        elif symbol:
            if symbol == "*":
                skipping = True
            else:
                piece = _RTF_BREAKS.get(symbol, symbol if symbol in "\\{}" else "")
        elif hex_byte:
            try:
                piece = bytes([int(hex_byte, 16)]).decode(codepage)
            except (LookupError, UnicodeDecodeError):
                piece = bytes([int(hex_byte, 16)]).decode("latin-1")
        elif literal:
            piece = literal
        if piece and not skipping:
            out.append(piece)
            size += len(piece)
            if size >= max_chars:
                break
    return "".join(out)[:max_chars]


def document_text(part) -> str | None:
    """For policy.context.register_text_extractor: a document's text, or None (not a document, or unreadable)."""
    extraction = extract_document(part)
    if extraction is None or (extraction.problem and not extraction.text):
        return None
    return extraction.text
