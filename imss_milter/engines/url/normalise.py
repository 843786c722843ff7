"""Turn a URL as written in mail into the form blocklists are asked about: pure functions, no network.

normalise_url() removes what hides the real host (userinfo, percent and
IDNA encodings, decimal/hex/octal IPv4 forms, trailing dots, ports) and
gives the host in ASCII (what DNS zones list) and in Unicode (what a
person reads). registered_domain() uses tldextract's bundled public
suffix list snapshot only: the engine never fetches the list.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

import tldextract

MAX_URL_CHARS = 4096            # longer URLs are cut: nothing legitimate needs more, and regexes stay cheap
MAX_HOST_CHARS = 253            # RFC 1035

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]{0,31}):", re.IGNORECASE)
_WEB_SCHEMES = ("http", "https", "ftp")
# browsers end the authority at any of these; a backslash counts as a slash in http(s) URLs
_AUTHORITY_END = re.compile(r"[/?#\\]")
# browsers drop tabs and newlines anywhere in a URL (WHATWG URL standard), so mail may split hosts with them
_INVISIBLE = re.compile(r"[\t\r\n\x00\u00ad\u200b-\u200d\u2060\ufeff]")
# IDNA label separators besides '.' (ideographic and fullwidth full stops) that browsers accept
_DOTS = re.compile(r"[\u3002\uff0e\uff61]")
_HOST_CHARS = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")

_extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@dataclass(frozen=True)
class NormalUrl:
    """A URL reduced to what reputation lookups need."""

    url: str                # scheme://host[:port]/rest with the host normalised and no userinfo
    host: str               # ASCII (punycode) host, or the dotted-quad / IPv6 address
    display_host: str       # the host as a person reads it (Unicode for xn-- labels)
    is_ip: bool
    userinfo: str = ""      # what was removed before '@' (http://paypal.com@evil.test/ hides evil.test)


def parse_ipv4_host(host: str) -> str | None:
    """Dotted quad for a host that browsers read as IPv4 (inet_aton forms), else None.

    1 to 4 dot-separated numbers, each decimal, 0x-hex or 0-octal; the last
    number fills the remaining bytes: 3232235777, 0xC0.0xA8.1.1,
    0300.0250.1.1 and 192.168.257 are all addresses.
    """
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()                  # one trailing dot is allowed
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        number = _inet_number(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def _inet_number(text: str) -> int | None:
    lowered = text.lower()
    try:
        if lowered.startswith("0x"):
            return int(lowered[2:] or "0", 16)
        if len(lowered) > 1 and lowered.startswith("0"):
            return int(lowered, 8)
        if lowered.isdigit():
            return int(lowered)
    except ValueError:
        return None
    return None


def ascii_host(host: str) -> str | None:
    """The ASCII (punycode) form of a host name; None when it cannot be a DNS name."""
    host = _DOTS.sub(".", host).strip(".").lower()
    if not host or len(host) > MAX_HOST_CHARS * 4:
        return None
    if not host.isascii():
        labels = []
        for label in host.split("."):
            if label.isascii():
                labels.append(label)
                continue
            try:
                labels.append(label.encode("idna").decode("ascii"))
            except UnicodeError:
                try:        # labels IDNA 2003 refuses (emoji...) still resolve as raw punycode in browsers
                    labels.append("xn--" + label.encode("punycode").decode("ascii"))
                except UnicodeError:
                    return None
        host = ".".join(labels).lower()
    if len(host) > MAX_HOST_CHARS or not _HOST_CHARS.match(host):
        return None
    return host


def unicode_host(host: str) -> str:
    """The readable form of an ASCII host: xn-- labels decoded, others kept."""
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)


def split_url(text: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, host[:port], rest) of an absolute or scheme-relative URL, or of 'www.' text."""
    text = _INVISIBLE.sub("", text).strip()[:MAX_URL_CHARS]
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme not in _WEB_SCHEMES:
            return None
        rest = text[match.end():].lstrip("/\\")
    elif text.startswith(("//", "\\\\")):
        scheme, rest = "http", text.lstrip("/\\")
    elif text[:4].lower() == "www." or re.match(r"(?i)www\d{1,3}\.", text):
        scheme, rest = "http", text
    else:
        return None
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[:end.start()], rest[end.start():]) if end else (rest, "")
    userinfo, _, hostport = authority.rpartition("@")
    return scheme, userinfo, hostport, tail.replace("\\", "/")


def _split_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        return "[" + host + "]", after[1:] if after.startswith(":") else ""
    host, _, port = hostport.partition(":")
    return host, port if port.isdigit() else ""


def normalise_url(text: str) -> NormalUrl | None:
    """The NormalUrl of a written URL; None when it has no usable web host."""
    parts = split_url(text)
    if parts is None:
        return None
    scheme, userinfo, hostport, tail = parts
    host, port = _split_port(hostport)
    host = unquote(host, errors="replace").strip()
    if host.startswith("[") and host.endswith("]"):
        try:
            address = ipaddress.IPv6Address(host[1:-1].split("%")[0])
        except ValueError:
            return None
        host_text, display, is_ip = str(address), str(address), True
        authority = f"[{host_text}]"
    else:
        host = host.rstrip(".")
        ip = parse_ipv4_host(host)
        if ip is not None:
            host_text, display, is_ip = ip, ip, True
        else:
            host_text = ascii_host(host)
            if host_text is None:
                return None
            display, is_ip = unicode_host(host_text), False
        authority = host_text
    if port and port not in ("80", "443"):
        authority += ":" + port
    return NormalUrl(url=f"{scheme}://{authority}{tail or '/'}", host=host_text, display_host=display,
                     is_ip=is_ip, userinfo=unquote(userinfo, errors="replace"))


@lru_cache(maxsize=4096)
def registered_domain(host: str) -> str:
    """The domain someone registered: example.co.uk for foo.bar.example.co.uk.

    A TLD the public suffix list does not know (.test, a brand-new one) is
    taken as a one-label suffix, as DNS sees it; an IP or a single label is
    returned as it is."""
    if parse_ipv4_host(host) is not None or ":" in host:
        return host
    parts = _extractor(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    labels = host.split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else host
