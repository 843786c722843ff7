"""The local blocked-URL list: host globs (or host/path globs) with a category, from pattern files and config.

File format (patterns/url/*.txt, read in name order), one entry a line:

    # comment
    *.bad.test              phishing     # bad.test and every host under it
    evil.test                            # only this host; the category defaults to "blocked"
    shared.test/~mallory/*  malware      # a '/' makes the glob match host/path

Exact names and `*.domain` entries are looked up by walking the host's
parent domains (cheap for large lists); other globs are matched in turn.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

from ...errors import ConfigError
from ...yamlconf import read_text
from .normalise import NormalUrl, ascii_host

DEFAULT_CATEGORY = "blocked"
_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_GLOB_CHARS = re.compile(r"^[a-z0-9_.*?\[\]!/:~%+=&;,@$'()-]+$")


@dataclass
class BlockedList:
    exact: dict[str, tuple[str, str]] = field(default_factory=dict)     # host → (category, entry)
    suffix: dict[str, tuple[str, str]] = field(default_factory=dict)    # domain → (category, entry) for *.domain
    globs: list[tuple[re.Pattern, bool, str, str]] = field(default_factory=list)  # (regex, on path, category, entry)

    def __len__(self) -> int:
        return len(self.exact) + len(self.suffix) + len(self.globs)

    def add(self, entry: str, category: str = DEFAULT_CATEGORY) -> None:
        """Add one glob; ValueError says what is wrong with it."""
        glob = entry.strip().lower()
        if glob.startswith(("http://", "https://")):
            glob = glob.split("://", 1)[1]
        if not glob or not _GLOB_CHARS.match(glob) and not _idna_ok(glob):
            raise ValueError(f"expected a host glob like *.bad.test or host/path*, got {entry!r}")
        host_part, slash, path_part = glob.partition("/")
        if not host_part.isascii():
            # a Unicode name is listed by its punycode form, which is what URLs are normalised to
            prefix = "*." if host_part.startswith("*.") else ""
            converted = ascii_host(host_part[len(prefix):])
            if converted is None:
                raise ValueError(f"expected a host name or *.domain, got {entry!r}")
            host_part = prefix + converted
            glob = host_part + slash + path_part
        wild = any(c in host_part for c in "*?[")
        if not slash and not wild:
            self.exact[host_part.rstrip(".")] = (category, entry)
        elif not slash and host_part.startswith("*.") and not any(c in host_part[2:] for c in "*?["):
            self.suffix[host_part[2:].rstrip(".")] = (category, entry)
        else:
            self.globs.append((re.compile(fnmatch.translate(glob)), bool(slash), category, entry))

    def match(self, url: NormalUrl) -> tuple[str, str] | None:
        """(category, entry) of the first entry that covers the URL, or None."""
        host = url.host
        hit = self.exact.get(host)
        if hit is not None:
            return hit
        labels = host.split(".")
        if not url.is_ip:
            for index in range(len(labels)):
                hit = self.suffix.get(".".join(labels[index:]))
                if hit is not None:
                    return hit
        if self.globs:
            host_and_path = url.url.split("://", 1)[1]
            for regex, on_path, category, entry in self.globs:
                if regex.match(host_and_path if on_path else host):
                    return category, entry
        return None


def _idna_ok(glob: str) -> bool:
    return not glob.isascii() and not any(c.isspace() for c in glob)


def parse_blocked_text(text: str, path: str, into: BlockedList) -> None:
    """Add a blocked-list file's entries; ConfigError with file:line for a line that does not read."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2:
            raise ConfigError(f"expected 'glob [category]', got {len(fields)} fields", path, number)
        category = fields[1].lower() if len(fields) == 2 else DEFAULT_CATEGORY
        if not _CATEGORY.fullmatch(category):
            raise ConfigError(f"expected a category name (letters, digits, '-', '_'), got {fields[1]!r}", path, number)
        try:
            into.add(fields[0], category)
        except ValueError as exc:
            raise ConfigError(str(exc), path, number) from None


def load_blocked_dir(directory: str, into: BlockedList | None = None) -> BlockedList:
    """Every *.txt file of a url pattern component, in name order; a missing directory is an empty list."""
    blocked = into if into is not None else BlockedList()
    if not os.path.isdir(directory):
        return blocked
    for name in sorted(os.listdir(directory)):
        if name.endswith(".txt"):
            path = os.path.join(directory, name)
            parse_blocked_text(read_text(path, "URL blocked list"), path, blocked)
    return blocked
