"""Tell failures that corrupt input causes from internal ones.

Corrupt input legitimately makes decoders and archive readers raise; the
parser scans what it can and marks the message malformed. Anything else (a
bug, a codec that cannot be imported after the daemon dropped privileges,
memory) means the scan is incomplete for reasons the sender does not
control: it must surface as MessageModel.errors so the caller tempfails
instead of delivering what was not scanned.
"""

from __future__ import annotations

import binascii
import lzma
import os
import struct
import tarfile
import traceback
import zipfile
import zlib

# What corrupt input can make the standard decoders and readers raise.
# ValueError covers binascii.Error and UnicodeDecodeError; OSError covers
# bz2/gzip stream errors; RecursionError is what nesting beyond the guards
# would cause; NotImplementedError is zipfile's answer to an unknown method;
# OverflowError comes from absurd sizes in headers.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
    lzma.LZMAError, OSError, binascii.Error, UnicodeError, struct.error, ValueError,
    RecursionError, NotImplementedError, OverflowError,
)


def is_input_error(error: BaseException) -> bool:
    """True when corrupt input alone can explain the exception."""
    return isinstance(error, INPUT_ERRORS)


def describe(where: str, error: BaseException) -> str:
    """"where: Type: message (file:line in function)", naming the innermost
    frame of our own package (else the innermost one), so an operator finds
    the failing code from the log line alone."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    ours = [f for f in frames if os.sep + _PACKAGE + os.sep in f.filename]
    frame = (ours or frames or [None])[-1]
    location = f" ({os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})" if frame else ""
    return f"{where}: {type(error).__name__}: {error}{location}"


_PACKAGE = __name__.split(".")[0]
