"""Find the URLs of a message: links and sources in HTML, bare URLs in text, link text naming another site.

Works on the MIME model's decoded parts (transfer encodings such as
quoted-printable are already undone). Every function is pure and bounded:
at most MAX_PART_BYTES per part and MAX_FOUND URLs per message are read,
so a hostile message costs a fixed amount.
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass

from ...mime.charsets import decode_bytes
from ...textmatch import anchored_finditer, url_starts
from .normalise import NormalUrl, normalise_url, registered_domain

MAX_PART_BYTES = 2 * 1024 * 1024      # of each text/HTML part; spam puts its links early
MAX_FOUND = 2000                      # distinct URL texts per message
MAX_LINK_TEXT = 2000                  # characters of an <a> element's content read for the mismatch check
MAX_ATTRIBUTE = 8192                  # characters of one attribute value
MAX_ANCHORS = 2000                    # <a> elements checked for a mismatch per part

# attributes whose value a mail client fetches or opens; the value may be quoted either way or bare
# (an unterminated quote takes the rest of its bounded run, as a browser would: no backtracking, linear time)
_URL_ATTRIBUTE = re.compile(
    r"""(?i)\b(?:href|src|action|formaction|background|poster|data-saferedirecturl)\s*=\s*"""
    r"""(?:"([^"]{0,%d})"?|'([^']{0,%d})'?|([^\s"'>]+))""" % (MAX_ATTRIBUTE, MAX_ATTRIBUTE))
_ANCHOR_START = re.compile(r"(?i)<a\s")
_ANCHOR_END = re.compile(r"(?i)</a\s*>")
# a URL in running text: a scheme, or www. without one; it ends at whitespace, quotes or angle brackets
_TEXT_URL = re.compile(r"""(?i)(?:\b(?:https?|ftp)://|(?<![\w.@/-])www\d{0,3}\.)[^\s<>"'`{}|\\^]+""")
# link text that is just a domain name ("paypal.com", "www.paypal.com/login")
_DOMAIN_TEXT = re.compile(r"(?i)^(?:[a-z0-9\u00a1-\uffff-]+\.)+[a-z\u00a1-\uffff][a-z0-9\u00a1-\uffff-]+(?:[/:?#]\S*)?$")
_TRAILING = ".,;:!?'\"*"
# a tag ends at '>' or, when unterminated, at the next '<': one pass, linear on hostile '<a <a <a'
_TAG = re.compile(r"<[^<>]*>?")


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
    return [trimmed for match in anchored_finditer(_TEXT_URL, text, url_starts(text, www=True))
            if (trimmed := _trim(match.group(0)))]


def _attribute_value(match: re.Match) -> str:
    value = next(group for group in match.groups() if group is not None)
    return html.unescape(value)


def urls_in_html(markup: str) -> list[tuple[str, str]]:
    """(url, source) pairs of an HTML document: attribute values first, then URLs in its visible text."""
    found = [(_attribute_value(match), "href")
             for match in itertools.islice(_URL_ATTRIBUTE.finditer(markup), MAX_FOUND)]
    found += [(url, "text") for url in urls_in_text(visible_text(markup))]
    return found


def visible_text(markup: str) -> str:
    """HTML text with tags made spaces and entities decoded: where bare URLs are written."""
    return html.unescape(_TAG.sub(" ", markup))


def shown_host(link_text: str) -> NormalUrl | None:
    """The site a link's visible text names, if the text is a URL or a bare domain."""
    text = " ".join(visible_text(link_text).split())
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
    for count, start in enumerate(_ANCHOR_START.finditer(markup)):
        if count >= MAX_ANCHORS:
            break
        # plain bounded searches, not one regex over the element: '<a <a <a ...' must stay linear
        tag_end = markup.find(">", start.end(), start.end() + MAX_ATTRIBUTE)
        if tag_end < 0:
            continue
        closing = _ANCHOR_END.search(markup, tag_end, tag_end + MAX_LINK_TEXT)
        attribute = _URL_ATTRIBUTE.search(markup, start.end(), tag_end)
        if closing is None or attribute is None:
            continue
        href = normalise_url(_attribute_value(attribute))
        shown = shown_host(markup[tag_end + 1:closing.start()])
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
