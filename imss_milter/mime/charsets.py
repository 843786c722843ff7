"""Turn bytes in a declared (and often wrong or unknown) charset into text.

Mail declares charsets carelessly: "us-ascii" bodies carry UTF-8, names are
quoted, typos abound. Decoding never fails; it falls back the way mail
clients do.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import importlib.util
from functools import lru_cache

# Names seen in real mail that Python's codec registry does not know.
_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode-2-0-utf-7": "utf-7",
    "utf7": "utf-7",
    "x-user-defined": "latin-1",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc_jp",
    "gb2312": "gb18030",        # a superset: real "gb2312" mail often uses GBK chars
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "ansi_x3.4-1968": "ascii",
}

# Codecs Python knows of but that exist only on Windows: on this platform a
# mail declaring them has an unknown charset, not a broken Python.
_WINDOWS_ONLY = {"mbcs", "oem"}
_CODEC_MODULES = frozenset(encodings.aliases.aliases.values())

# Declared ASCII is so often wrong that we treat it as "probably UTF-8".
_ASCII_NAMES = {"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "646", "us"}


@lru_cache(maxsize=256)
def normalise_charset(charset: str | None) -> str | None:
    """Return a Python codec name for a declared charset, or None if unknown."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").strip().lower()
    name = name.split("*", 1)[0]          # RFC 2231 language suffix: utf-8*en
    if not name:
        return None
    if name in _ASCII_NAMES:
        return "ascii"
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        if _python_ships_codec(name) and not _codec_loads(name):
            raise       # the codec is installed but cannot load: an environment failure
        return None     # junk that only resembles a real name (utéf-8): an unknown charset
    except ValueError:
        return None
    # Charsets such as "base64" or "rot13" name codecs that do not turn bytes
    # into text; decoding with them raises LookupError.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _codec_module(name: str) -> str:
    """The encodings module Python's own name normalisation maps a charset name to (it drops
    characters that are not ASCII letters or digits: utéf-8 becomes utf_8)."""
    module = encodings.normalize_encoding(name).lower()
    return encodings.aliases.aliases.get(module, module)


def _codec_loads(name: str) -> bool:
    """Whether the codec module a name normalises to loads: when it does, a failed lookup of the
    name itself was the mail's doing, not a broken install."""
    try:
        codecs.lookup(_codec_module(name))
        return True
    except (LookupError, ValueError):
        return False


def _python_ships_codec(name: str) -> bool:
    """True when Python's encodings package has a module for this charset, so
    a failed lookup means it could not be imported (files unreadable after a
    privilege drop, a broken install), not that the mail named junk."""
    module = _codec_module(name)
    # Only real codec modules: "aliases" or "__init__" are modules of the
    # package too, and a mail naming them must not look like a broken install.
    if module in _WINDOWS_ONLY or module not in _CODEC_MODULES:
        return False
    try:
        return importlib.util.find_spec("encodings." + module) is not None
    except (ImportError, ValueError):
        return False


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text bytes leniently; never raises for any input (only when
    Python cannot load a codec it ships, an environment failure).

    Known charsets decode with replacement characters. Unknown, missing or
    ASCII charsets try strict UTF-8 first, then Windows-1252/Latin-1, which
    is what clients show for such mail.
    """
    codec = normalise_charset(charset) if charset else None     # no charset: nothing to look up
    if codec and codec != "ascii":
        try:
            return data.decode(codec)
        except (UnicodeError, ValueError):      # junk for this charset
            pass
        if codec not in ("utf-8",):
            try:
                return data.decode(codec, errors="replace")
            except (UnicodeError, ValueError):
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec == "utf-8":
        return data.decode("utf-8", errors="replace")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")
