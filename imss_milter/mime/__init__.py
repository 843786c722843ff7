"""MIME layer: raw message bytes → MessageModel (parts, names, true types, text).

    parse_message(raw, limits=Limits()) -> MessageModel   # never raises
    true_type_of(payload, name_hint="") -> (category, mime)
"""

from .model import (FLAG_ARCHIVE_LIMIT, FLAG_ENCRYPTED, FLAG_MALFORMED, FLAG_UNSCANNABLE,
                    TRUE_TYPE_CATEGORIES, Limits, MessageModel, Part)
from .parser import parse_message
from .text import html_to_text, normalise_whitespace
from .truetype import true_type_of

__all__ = [
    "parse_message", "true_type_of", "html_to_text", "normalise_whitespace",
    "Limits", "MessageModel", "Part", "TRUE_TYPE_CATEGORIES",
    "FLAG_ARCHIVE_LIMIT", "FLAG_ENCRYPTED", "FLAG_MALFORMED", "FLAG_UNSCANNABLE",
]
