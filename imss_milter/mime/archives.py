"""List and read archive members (zip, 7z, tar, gzip, bzip2, xz) within limits.

Damage in an archive (failures.INPUT_ERRORS) yields what could be read and
a note; any other exception is an internal failure and propagates, except
from py7zr, whose errors on hostile bytes have no fixed types (see _expand_7z).
Content that damage kept unread is noted as unreadable (→ archive.unscannable).

Every read is bounded: by the bytes left in the message's expansion budget
and by the member's compression ratio, so a zip bomb costs at most the
limit, never its full size. Members come back with every name they go by
and notes about anything suspicious; the parser turns them into Parts.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

from .failures import INPUT_ERRORS
from .model import Limits

_CHUNK = 64 * 1024
_SEVENZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"


@dataclass
class Member:
    names: list[str]
    payload: bytes
    encrypted: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Expansion:
    """What one archive held, and why it may be incomplete."""

    members: list[Member] = field(default_factory=list)
    limit_notes: list[str] = field(default_factory=list)       # → archive.limit_exceeded
    malformed_notes: list[str] = field(default_factory=list)   # → malformed
    unreadable_notes: list[str] = field(default_factory=list)  # content left unread → archive.unscannable
    encrypted_notes: list[str] = field(default_factory=list)   # the archive itself is encrypted → encrypted

    def unreadable(self, note: str):
        """Damage kept content from being read: malformed, and unscannable too."""
        self.malformed_notes.append(note)
        self.unreadable_notes.append(note)


@dataclass
class Budget:
    """Expansion bytes left for the whole message (shared by all archives)."""

    limits: Limits
    expanded: int = 0

    def remaining(self) -> int:
        return max(0, self.limits.archive_max_expanded - self.expanded)

    def ratio_cap(self, compressed_size: int) -> int:
        """Most bytes a member of this compressed size may expand to."""
        floor = getattr(self.limits, "archive_ratio_min_bytes", 1024 * 1024)
        return max(compressed_size * self.limits.archive_max_ratio, floor)


def archive_kind(payload: bytes) -> str | None:
    """zip, 7z, tar, gzip, bzip2 or xz when we can expand the payload, else None."""
    head = payload[:6]
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head == _SEVENZIP_MAGIC:
        return "7z"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head == b"\xfd7zXZ\x00":
        return "xz"
    if payload[257:262] == b"ustar" or _plausible_old_tar(payload):
        return "tar"
    return None


def _plausible_old_tar(payload: bytes) -> bool:
    """Pre-POSIX tar: no magic, but a valid header checksum."""
    if len(payload) < 512:
        return False
    header = payload[:512]
    try:
        stored = int(header[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:512])
    return stored == computed and header[0] != 0


def expand(payload: bytes, archive_name: str, budget: Budget) -> Expansion | None:
    """Members of the archive in `payload`, or None if it is no archive we read."""
    kind = archive_kind(payload)
    if kind is None:
        return None
    result = Expansion()
    try:
        if kind == "zip":
            _expand_zip(payload, budget, result)
        elif kind == "7z":
            _expand_7z(payload, budget, result)
        elif kind == "tar":
            _expand_tar(payload, budget, result)
        else:
            _expand_compressed(kind, payload, archive_name, budget, result)
    except INPUT_ERRORS as error:     # a damaged archive yields what was read so far
        result.unreadable(f"{archive_name}: damaged {kind} archive ({type(error).__name__})")
    return result


# --- bounded reading ---------------------------------------------------------

def _bounded_read(stream, compressed_size: int | None, budget: Budget,
                  result: Expansion, label: str) -> bytes:
    """Read a member stream, stopping at the budget or the ratio cap."""
    budget_cap = budget.remaining()
    ratio_cap = budget.ratio_cap(compressed_size) if compressed_size is not None else budget_cap
    cap = min(budget_cap, ratio_cap)
    chunks = []
    total = 0
    while True:
        want = min(_CHUNK, cap - total + 1)
        if want <= 0:
            break
        try:
            chunk = stream.read(want)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                lzma.LZMAError, NotImplementedError) as error:
            result.unreadable(f"{label}: read error ({type(error).__name__})")
            break
        if not chunk:
            break
        total += len(chunk)
        chunks.append(chunk)
        if total > cap:
            _note_cap(result, label, total, cap, ratio_cap, budget_cap)
            break
    budget.expanded += total
    data = b"".join(chunks)
    return data[:cap] if total > cap else data


def _note_cap(result: Expansion, label: str, total: int, cap: int, ratio_cap: int, budget_cap: int):
    if cap == ratio_cap and ratio_cap < budget_cap:
        result.limit_notes.append(f"{label}: compression ratio above limit (read stopped at {cap} bytes)")
    else:
        result.limit_notes.append(f"{label}: expanded size above limit (read stopped at {cap} bytes)")


def _decompress_zlib(data: bytes, wbits: int, budget: Budget, result: Expansion, label: str,
                     multi_member: bool = False) -> bytes:
    """Inflate with the output bounded like _bounded_read."""
    budget_cap = budget.remaining()
    ratio_cap = budget.ratio_cap(len(data))
    cap = min(budget_cap, ratio_cap)
    out = []
    total = 0
    decompressor = zlib.decompressobj(wbits)
    pending = data
    while pending and total <= cap:
        try:
            chunk = decompressor.decompress(pending, min(_CHUNK, cap - total + 1))
        except zlib.error as error:
            result.unreadable(f"{label}: inflate error ({error})")
            break
        out.append(chunk)
        total += len(chunk)
        if decompressor.eof:
            pending = decompressor.unused_data
            if not (multi_member and pending.startswith(b"\x1f\x8b")):
                break
            decompressor = zlib.decompressobj(wbits)
            continue
        pending = decompressor.unconsumed_tail
        if not chunk and not pending:
            break
    return _bounded_output(out, total, cap, ratio_cap, budget_cap, budget, result, label)


def _bounded_output(out, total, cap, ratio_cap, budget_cap, budget: Budget, result: Expansion, label: str) -> bytes:
    """What a decompressor produced, cut at the cap (noting which limit cut it) and charged to the budget."""
    if total > cap:
        _note_cap(result, label, total, cap, ratio_cap, budget_cap)
    budget.expanded += total
    joined = b"".join(out)
    return joined[:cap] if total > cap else joined


def _decompress_other(data: bytes, make, budget: Budget, result: Expansion, label: str) -> bytes:
    """bzip2/xz streams (their decompressors keep input internally)."""
    budget_cap = budget.remaining()
    ratio_cap = budget.ratio_cap(len(data))
    cap = min(budget_cap, ratio_cap)
    out = []
    total = 0
    decompressor = make()
    feed = data
    while total <= cap:
        try:
            chunk = decompressor.decompress(feed, min(_CHUNK, cap - total + 1))
        except (OSError, EOFError, lzma.LZMAError, ValueError) as error:
            result.unreadable(f"{label}: decompression error ({error})")
            break
        feed = b""
        out.append(chunk)
        total += len(chunk)
        if decompressor.eof:
            rest = decompressor.unused_data
            if rest[:3] in (b"BZh", b"\xfd7z"):
                decompressor, feed = make(), rest   # concatenated streams
                continue
            break
        if not chunk and decompressor.needs_input:
            break
    return _bounded_output(out, total, cap, ratio_cap, budget_cap, budget, result, label)


# --- zip ---------------------------------------------------------------------

def _zip_names(raw: bytes, utf8_flag: bool) -> list[str]:
    """A zip name as cp437 (the standard) and as UTF-8 (what many tools write)."""
    names = []
    if utf8_flag:
        names.append(raw.decode("utf-8", "replace"))
    elif raw.isascii():
        names.append(raw.decode("ascii"))      # what both readings give (cp437 keeps ASCII as it is)
    else:
        names.append(raw.decode("cp437"))
        try:
            utf8 = raw.decode("utf-8")
            if utf8 not in names:
                names.append(utf8)
        except UnicodeDecodeError:
            pass
    return names


def _local_header(payload: bytes, offset: int):
    """(flags, method, raw name, data offset) of the local header, or None."""
    if offset < 0 or payload[offset:offset + 4] != b"PK\x03\x04" or len(payload) < offset + 30:
        return None
    flags, method = struct.unpack_from("<HH", payload, offset + 6)
    name_len, extra_len = struct.unpack_from("<HH", payload, offset + 26)
    raw_name = payload[offset + 30:offset + 30 + name_len]
    return flags, method, raw_name, offset + 30 + name_len + extra_len


class _CentralEntry:
    """One central directory entry read by _central_directory: the ZipInfo
    attributes the expansion uses, with the values zipfile gives them."""

    __slots__ = ("index", "raw_name", "orig_filename", "filename", "flag_bits", "compress_type", "compress_size",
                 "header_offset")

    def is_dir(self) -> bool:
        return self.filename[-1] == "/"


def _plain_extra(extra: bytes) -> bool:
    """Extra fields zipfile's ZipInfo._decodeExtra accepts and leaves the
    sizes and offset alone for: well formed, no zip64 field."""
    while len(extra) >= 4:
        kind, length = struct.unpack_from("<HH", extra)
        if length + 4 > len(extra) or kind == 0x0001:
            return False
        extra = extra[length + 4:]
    return True


def _central_directory(payload: bytes) -> list[_CentralEntry] | None:
    """The central directory of a plainly laid out zip (end record last, no
    archive comment, no zip64, every field whole), read as zipfile reads it
    (zipfile's _EndRecData and _RealGetContents, Python 3.11) but without its
    file object and ZipInfo objects, a large share of a small zip's cost.
    None for anything else, and wherever zipfile would raise: zipfile then
    reads the directory itself and gives its own answer."""
    end = len(payload) - zipfile.sizeEndCentDir
    if (end < zipfile.sizeEndCentDir64Locator or payload[end:end + 4] != zipfile.stringEndArchive
            or payload[-2:] != b"\x00\x00"
            or payload[end - zipfile.sizeEndCentDir64Locator:][:4] == zipfile.stringEndArchive64Locator):
        return None
    size_cd, offset_cd = struct.unpack_from(zipfile.structEndArchive, payload, end)[5:7]
    start = end - size_cd         # zipfile: offset_cd + concat
    if start < 0:
        return None
    concat = start - offset_cd
    directory = payload[start:end]
    entries: list[_CentralEntry] = []
    pos = 0
    while pos < size_cd:
        if pos + zipfile.sizeCentralDir > size_cd:
            return None
        fields = struct.unpack_from(zipfile.structCentralDir, directory, pos)
        if fields[0] != zipfile.stringCentralDir or fields[3] > zipfile.MAX_EXTRACT_VERSION:
            return None
        name_start = pos + zipfile.sizeCentralDir
        name_end = name_start + fields[12]
        extra_end = name_end + fields[13]
        pos = extra_end + fields[14]
        if pos > size_cd or not _plain_extra(directory[name_end:extra_end]):
            return None
        flags = fields[5]
        raw_name = directory[name_start:name_end]
        try:
            name = raw_name.decode("ascii" if raw_name.isascii() else "utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            return None
        entry = _CentralEntry()
        entry.index = len(entries)
        entry.raw_name = raw_name
        entry.orig_filename = name
        entry.filename = name.split("\x00", 1)[0]
        if not entry.filename:
            return None     # ZipInfo.is_dir() fails on it
        entry.flag_bits = flags
        entry.compress_type = fields[6]
        entry.compress_size = fields[10]
        entry.header_offset = fields[18] + concat
        entries.append(entry)
    return entries


class _ZipOnDemand:
    """zipfile's reading of an archive whose directory _central_directory
    read, opened only when a member needs zipfile to read it."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.archive: zipfile.ZipFile | None = None

    def open(self, entry: _CentralEntry):
        if self.archive is None:
            self.archive = zipfile.ZipFile(io.BytesIO(self.payload))
        info = self.archive.infolist()[entry.index]
        info.orig_filename = entry.orig_filename    # as _read_zip_member set it
        return self.archive.open(info)


def _expand_zip(payload: bytes, budget: Budget, result: Expansion):
    infos = _central_directory(payload)
    if infos is not None:
        archive = _ZipOnDemand(payload)
    else:
        try:
            archive = zipfile.ZipFile(io.BytesIO(payload))
            infos = archive.infolist()
        except INPUT_ERRORS as error:
            result.malformed_notes.append(f"zip central directory unreadable ({type(error).__name__}); "
                                          "members read from local headers")
            _expand_zip_local_headers(payload, budget, result)
            return
    limit = budget.limits.archive_max_entries
    if len(infos) > limit:
        result.limit_notes.append(f"zip has {len(infos)} entries, more than {limit}")
        infos = infos[:limit]
    for info in infos:
        # not info.is_dir(): a name that is empty up to its first NUL ("\0evil.exe") made it raise
        if info.filename.endswith("/"):
            continue
        if isinstance(info, _CentralEntry):
            central_raw = info.raw_name     # what encoding orig_filename back gives
        else:
            central_raw = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437",
                                                    "surrogateescape")
        names = _zip_names(central_raw, bool(info.flag_bits & 0x800))
        notes: list[str] = []
        local = _local_header(payload, info.header_offset)
        if local is None:
            result.malformed_notes.append(f"{info.filename}: local header missing")
        elif local[2] != central_raw:
            local_names = _zip_names(local[2], bool(local[0] & 0x800))
            note = (f"zip names disagree: central directory {info.filename!r}, "
                    f"local header {local_names[0]!r}")
            notes.append(note)
            result.malformed_notes.append(note)
            names += [n for n in local_names if n not in names]
        encrypted = bool(info.flag_bits & 0x1) or bool(local and local[0] & 0x1)
        if encrypted:
            result.members.append(Member(names=names, payload=b"", encrypted=True,
                                         notes=notes + ["encrypted zip member"]))
            continue
        data = _read_zip_member(archive, info, local, payload, budget, result)
        result.members.append(Member(names=names, payload=data, notes=notes))
        if budget.remaining() == 0:
            result.limit_notes.append("expansion budget used up; remaining members not read")
            break


# local-header flags zipfile refuses to read (compressed patched data, strong encryption)
_ZIP_UNREAD_FLAGS = 0x20 | 0x40


def _read_zip_member(archive, info, local, payload: bytes, budget: Budget, result: Expansion) -> bytes:
    label = info.filename
    if (local is not None and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
            and not (local[0] | info.flag_bits) & _ZIP_UNREAD_FLAGS
            and local[3] + info.compress_size <= len(payload)):
        # Stored and deflated members, whole in the payload, are inflated straight from their bytes:
        # the same data zipfile's member stream gives, without its per-member objects and reads
        # (most of the cost of a small zip). Anything else goes through zipfile below.
        raw = payload[local[3]:local[3] + info.compress_size]
        if info.compress_type == zipfile.ZIP_STORED:
            return _bounded_read(io.BytesIO(raw), len(raw), budget, result, label)
        return _decompress_zlib(raw, -15, budget, result, label)
    if local is not None:
        # zipfile refuses members whose two names differ; we read them anyway.
        try:
            flags = local[0]
            info.orig_filename = local[2].decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            pass
    try:
        with archive.open(info) as stream:
            # Keep data even when the CRC is wrong: extractors still write it.
            stream._expected_crc = None
            return _bounded_read(stream, info.compress_size, budget, result, label)
    except INPUT_ERRORS as error:
        if local is None:
            result.unreadable(f"{label}: unreadable ({type(error).__name__})")
            return b""
        raw = payload[local[3]:local[3] + info.compress_size]
        if info.compress_type == zipfile.ZIP_STORED:
            return _bounded_read(io.BytesIO(raw), len(raw), budget, result, label)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            return _decompress_zlib(raw, -15, budget, result, label)
        result.unreadable(f"{label}: unreadable ({type(error).__name__})")
        return b""


def _expand_zip_local_headers(payload: bytes, budget: Budget, result: Expansion):
    """Walk local headers of a zip whose central directory is damaged."""
    offset = payload.find(b"PK\x03\x04")
    count = 0
    while offset >= 0 and count < budget.limits.archive_max_entries:
        local = _local_header(payload, offset)
        if local is None:
            break
        flags, method, raw_name, data_start = local
        compressed_size = struct.unpack_from("<I", payload, offset + 18)[0] if len(payload) >= offset + 22 else 0
        names = _zip_names(raw_name, bool(flags & 0x800))
        count += 1
        if not names[0].endswith("/"):
            if flags & 0x1:
                result.members.append(Member(names=names, payload=b"", encrypted=True,
                                             notes=["encrypted zip member"]))
            else:
                if flags & 0x8 or compressed_size == 0:
                    raw = payload[data_start:]     # size unknown: inflate until the stream ends
                else:
                    raw = payload[data_start:data_start + compressed_size]
                if method == 8:
                    data = _decompress_zlib(raw, -15, budget, result, names[0])
                elif method == 0 and not flags & 0x8:
                    data = _bounded_read(io.BytesIO(raw), len(raw), budget, result, names[0])
                else:
                    data = b""
                    result.unreadable(f"{names[0]}: cannot read member (method {method})")
                result.members.append(Member(names=names, payload=data))
        offset = payload.find(b"PK\x03\x04", data_start)
    if offset >= 0 and count >= budget.limits.archive_max_entries:
        result.limit_notes.append(f"zip has more than {budget.limits.archive_max_entries} entries")
    if not result.members:
        result.unreadable("zip: no member could be read")


# --- 7z ----------------------------------------------------------------------

class _CappedWriter:
    """A py7zr output that keeps bytes until the archive's shared cap is reached
    and drops the rest (counting them), so lying headers cannot fill memory."""

    def __init__(self, shared: dict):
        self.shared = shared
        self.buffer = io.BytesIO()

    def write(self, data) -> int:
        room = self.shared["cap"] - self.shared["kept"]
        kept = data[:max(0, room)]
        self.buffer.write(kept)
        self.shared["kept"] += len(kept)
        self.shared["dropped"] += len(data) - len(kept)
        return len(data)

    def read(self, size=None) -> bytes:
        return self.buffer.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buffer.seek(offset, whence)

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return self.buffer.getbuffer().nbytes

    def close(self) -> None:
        pass


def _capped_factory(cap: int):
    """A py7zr WriterFactory whose writers share one cap (built on first use:
    py7zr is imported only when a 7z archive arrives)."""
    from .readers import py7zr

    class CappedFactory(py7zr.io.WriterFactory):
        def __init__(self):
            self.shared = {"cap": cap, "kept": 0, "dropped": 0}
            self.products: dict[str, _CappedWriter] = {}

        def create(self, filename: str):
            product = _CappedWriter(self.shared)
            self.products[filename] = product
            return product

    return CappedFactory()


def _expand_7z(payload: bytes, budget: Budget, result: Expansion):
    """Members of a 7z archive. Sizes come from the headers first: an archive
    that declares more than the budget or the ratio allows is listed, not
    decompressed. py7zr raises many kinds of exceptions on hostile bytes;
    each one means the archive could not be read (MemoryError aside)."""
    from .readers import py7zr
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(payload))
    except py7zr.PasswordRequired:
        result.encrypted_notes.append("7z archive with encrypted headers: member names hidden")
        return
    except MemoryError:
        raise
    except Exception as error:
        result.unreadable(f"7z archive unreadable ({type(error).__name__})")
        return
    with archive:
        _read_7z(archive, payload, budget, result, py7zr)


def _read_7z(archive, payload: bytes, budget: Budget, result: Expansion, py7zr):
    try:
        infos = [info for info in archive.list() if not info.is_directory and not info.is_symlink]
        encrypted = archive.needs_password()
    except MemoryError:
        raise
    except Exception as error:
        result.unreadable(f"7z listing unreadable ({type(error).__name__})")
        return
    limit = budget.limits.archive_max_entries
    if len(infos) > limit:
        result.limit_notes.append(f"7z has {len(infos)} entries, more than {limit}")
        infos = infos[:limit]
    names = [info.filename for info in infos]
    if encrypted:
        for name in names:
            result.members.append(Member(names=[name], payload=b"", encrypted=True,
                                         notes=["encrypted 7z member"]))
        return
    budget_cap = budget.remaining()
    ratio_cap = budget.ratio_cap(len(payload))
    cap = min(budget_cap, ratio_cap)
    declared = sum(max(0, info.uncompressed or 0) for info in infos)
    if declared > cap:
        # A solid 7z must be decompressed from its start to reach any member:
        # over the cap, nothing is decompressed at all.
        _note_cap(result, "7z", declared, cap, ratio_cap, budget_cap)
        for name in names:
            result.members.append(Member(names=[name], payload=b"", notes=["7z member not read (limit)"]))
        return
    factory = _capped_factory(cap)
    try:
        archive.extract(targets=names, factory=factory)
    except MemoryError:
        raise
    except Exception as error:      # keep what was written before the damage
        result.unreadable(f"7z members unreadable ({type(error).__name__})")
    shared = factory.shared
    budget.expanded += shared["kept"]
    if shared["dropped"]:
        _note_cap(result, "7z", shared["kept"] + shared["dropped"], cap, ratio_cap, budget_cap)
    for info in infos:
        name = info.filename
        product = factory.products.get(name)
        if product is None and not info.uncompressed:
            result.members.append(Member(names=[name], payload=b""))    # an empty file has no stream
            continue
        if product is None:
            result.members.append(Member(names=[name], payload=b"", notes=["7z member not extracted"]))
            if not result.unreadable_notes:
                result.unreadable(f"{name}: 7z member not extracted")
            continue
        result.members.append(Member(names=[name], payload=product.buffer.getvalue()))


# --- tar and single-file compressors ----------------------------------------

def _expand_tar(payload: bytes, budget: Budget, result: Expansion):
    """Members of an uncompressed tar held in memory (no expansion involved)."""
    limit = budget.limits.archive_max_entries
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as archive:
        count = 0
        while True:
            try:
                entry = archive.next()
            except tarfile.TarError as error:
                result.unreadable(f"tar damaged ({error})")
                break
            if entry is None:
                break
            count += 1
            if count > limit:
                result.limit_notes.append(f"tar has more than {limit} entries")
                break
            if not entry.isfile():
                continue
            name = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            stream = archive.extractfile(entry)
            data = stream.read() if stream is not None else b""
            notes = [] if len(data) == entry.size else ["tar member truncated"]
            result.members.append(Member(names=[name], payload=data, notes=notes))


def _inner_name(kind: str, payload: bytes, archive_name: str) -> str:
    """The file a gzip/bzip2/xz stream holds: the gzip FNAME, else the archive name
    without its compression suffix."""
    if kind == "gzip" and len(payload) > 10 and payload[3] & 0x08:
        pos = 10
        if payload[3] & 0x04 and len(payload) > 12:
            pos += 2 + struct.unpack_from("<H", payload, 10)[0]
        end = payload.find(b"\x00", pos, pos + 1024)
        if end > pos:
            return payload[pos:end].decode("latin-1")
    lower = archive_name.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".tbz2", ".tar"), (".tbz", ".tar"), (".txz", ".tar"),
                                (".gz", ""), (".bz2", ""), (".xz", ""), (".z", "")):
        if lower.endswith(suffix) and len(archive_name) > len(suffix):
            return archive_name[:-len(suffix)] + replacement
    return archive_name or "data"


def _expand_compressed(kind: str, payload: bytes, archive_name: str, budget: Budget, result: Expansion):
    label = archive_name or kind
    if kind == "gzip":
        data = _decompress_zlib(payload, 16 + zlib.MAX_WBITS, budget, result, label, multi_member=True)
    elif kind == "bzip2":
        data = _decompress_other(payload, bz2.BZ2Decompressor, budget, result, label)
    else:
        data = _decompress_other(payload, lzma.LZMADecompressor, budget, result, label)
    if archive_kind(data) == "tar":
        # .tar.gz and friends: list the tar's members directly under the archive.
        _expand_tar(data, budget, result)
        return
    result.members.append(Member(names=[_inner_name(kind, payload, archive_name)], payload=data))
