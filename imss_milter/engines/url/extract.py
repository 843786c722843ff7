"""Find the URLs of a message: links and sources in HTML, bare URLs in text, link text naming another site.

Works on the MIME model's decoded parts (transfer encodings such as
quoted-printable are already undone). Every function is pure and bounded:
at most MAX_PART_BYTES per part and MAX_FOUND URLs per message are read,
so a hostile message costs a fixed amount.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from ...mime.charsets import decode_bytes
from ...mime.text import html_to_text
from .normalise import NormalUrl, normalise_url, registered_domain

MAX_PART_BYTES = 2 * 1024 * 1024      # of each text/HTML part; spam puts its links early
MAX_FOUND = 2000                      # distinct URL texts per message
MAX_LINK_TEXT = 2000                  # characters of an <a> element's content read for the mismatch check

# attributes whose value a mail client fetches or opens; the value may be quoted either way or bare
_URL_ATTRIBUTE = re.compile(
    r"""(?i)\b(?:href|src|action|formaction|background|poster|data-saferedirecturl)\s*=\s*"""
    r"""(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_ANCHOR = re.compile(r"(?is)<a\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>(.{0,%d}?)</a\s*>" % MAX_LINK_TEXT)
# a URL in running text: a scheme, or www. without one; it ends at whitespace, quotes or angle brackets
_TEXT_URL = re.compile(r"""(?i)(?:\b(?:https?|ftp)://|(?<![\w.@/-])www\d{0,3}\.)[^\s<>"'`{}|\\^]+""")
# link text that is just a domain name ("paypal.com", "www.paypal.com/login")
_DOMAIN_TEXT = re.compile(r"(?i)^(?:[a-z0-9\u00a1-\uffff-]+\.)+[a-z\u00a1-\uffff][a-z0-9\u00a1-\uffff-]+(?:[/:?#]\S*)?$")
_TRAILING = ".,;:!?'\"*"


@dataclass(frozen=True)
class FoundUrl:
    """One URL as found: where, how, and (for links) the site its text shows."""

    text: str                   # the URL as written (entities decoded)
    normal: NormalUrl
    part: tuple[str, ...]       # the part's display path
    source: str                 # href (an HTML attribute) | text (written in the text)
    shown_host: str = ""        # for a link whose text names another site: that site's host


def _trim(url: str) -> str:
    """Drop sentence punctuation after a URL, and a closing bracket that opens before it."""
    while url:
        if url[-1] in _TRAILING:
            url = url[:-1]
        elif url[-1] == ")" and url.count("(") < url.count(")"):
            url = url[:-1]
        elif url[-1] == "]" and url.count("[") < url.count("]"):
            url = url[:-1]
        else:
            break
    return url


def urls_in_text(text: str) -> list[str]:
    """Bare URLs in plain text, in order (with scheme, or starting www.)."""
    return [trimmed for match in _TEXT_URL.finditer(text) if (trimmed := _trim(match.group(0)))]


def _attribute_value(match: re.Match) -> str:
    value = next(group for group in match.groups() if group is not None)
    return html.unescape(value)


def urls_in_html(markup: str) -> list[tuple[str, str]]:
    """(url, source) pairs of an HTML document: attribute values first, then URLs in its visible text."""
    found = [(_attribute_value(match), "href") for match in _URL_ATTRIBUTE.finditer(markup)]
    found += [(url, "text") for url in urls_in_text(html.unescape(html_to_text(markup)))]
    return found


def shown_host(link_text: str) -> NormalUrl | None:
    """The site a link's visible text names, if the text is a URL or a bare domain."""
    text = html.unescape(html_to_text(link_text)).strip()
    if not text or len(text) > 500:
        return None
    urls = urls_in_text(text)
    if urls:
        return normalise_url(urls[0])
    if " " not in text and _DOMAIN_TEXT.match(text):
        return normalise_url("http://" + _trim(text))
    return None


def mismatched_links(markup: str) -> list[tuple[str, NormalUrl]]:
    """(href, shown site) of every <a> whose text names a different registered domain than its href."""
    result = []
    for match in _ANCHOR.finditer(markup):
        attribute = _URL_ATTRIBUTE.search(match.group(1))
        if attribute is None:
            continue
        href = normalise_url(_attribute_value(attribute))
        shown = shown_host(match.group(2))
        if href is None or shown is None:
            continue
        if registered_domain(href.host) != registered_domain(shown.host):
            result.append((_attribute_value(attribute), shown))
    return result


def _is_html(part) -> bool:
    return part.true_type == "html" or "html" in part.declared_type or part.mime == "text/html"


def _has_text(part) -> bool:
    if part.encrypted or part.inside_document:
        return False
    return (part.is_text_body or part.true_type in ("text", "html")
            or part.declared_type.startswith("text/") or part.mime.startswith("text/"))


def extract_urls(model) -> list[FoundUrl]:
    """Every distinct web URL of the message's text and HTML parts (bodies and text attachments), in order."""
    found: list[FoundUrl] = []
    seen: set[tuple[str, tuple]] = set()

    def add(text: str, part_path: tuple, source: str, shown: str = "") -> None:
        key = (text, part_path)
        if len(found) >= MAX_FOUND or (key in seen and not shown):
            return
        seen.add(key)
        normal = normalise_url(text)
        if normal is not None:
            found.append(FoundUrl(text, normal, part_path, source, shown))

    for part in model.parts:
        if not _has_text(part):
            continue
        path = tuple(part.path)
        text = decode_bytes(part.payload[:MAX_PART_BYTES], part.charset)
        if _is_html(part):
            for href, shown in mismatched_links(text):
                add(href, path, "href", shown.host)
            for url, source in urls_in_html(text):
                add(url, path, source)
        else:
            for url in urls_in_text(text):
                add(url, path, "text")
    return found
