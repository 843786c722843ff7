"""Text that keyword conditions search: HTML made plain, whitespace normalised.

Regular expressions rather than an HTML parser: they are several times
faster on 100 KB bodies and never raise on broken markup.
"""

from __future__ import annotations

import html
import re

_DROP_BLOCKS = re.compile(
    r"<(script|style|head|title|noscript|template)\b[^>]*>.*?(?:</\1\s*>|\Z)",
    re.IGNORECASE | re.DOTALL)
_COMMENTS = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Block-level tags separate words; inline ones do not ("fr<b>ee</b>" is "free",
# a classic keyword-evasion trick).
_BLOCK_TAGS = re.compile(
    r"</?(?:p|div|br|hr|tr|td|th|li|ul|ol|table|tbody|thead|h[1-6]|blockquote|pre|"
    r"section|article|header|footer|nav|dd|dt|dl|option|body|html|form|center|address)\b[^>]*>",
    re.IGNORECASE)
_TAGS = re.compile(r"<[!/?]?[A-Za-z][^>]*>|<![^>]*>")
_WHITESPACE = re.compile(r"\s+")
# Invisible characters used to split keywords; removed before matching.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document (script/style dropped, entities decoded)."""
    text = _COMMENTS.sub(" ", markup)
    text = _DROP_BLOCKS.sub(" ", text)
    text = _BLOCK_TAGS.sub(" ", text)
    text = _TAGS.sub("", text)
    text = html.unescape(text)
    return normalise_whitespace(text)


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace (incl. no-break space) become one space; trimmed."""
    text = text.translate(_INVISIBLE).replace("\xa0", " ")
    return _WHITESPACE.sub(" ", text).strip()
