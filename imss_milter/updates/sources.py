"""Where updates come from: a directory or an HTTP(S) URL serving manifest.json and the component files.

Every read has a byte limit (the manifest's own limit, or a file's declared
size) so a hostile or broken source cannot fill the disk or memory, and
HTTP reads have a timeout.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from .manifest import MANIFEST_NAME, UpdateError

MANIFEST_LIMIT = 1024 * 1024
SIGNATURE_LIMIT = 4096
CHUNK = 1 << 16


class Source:
    """A base location; `fetch(relative, limit)` returns at most `limit` bytes or raises UpdateError."""

    def __init__(self, location: str, timeout: float = 60.0):
        self.location = location
        self.timeout = timeout
        if location.startswith(("http://", "https://")):
            self.kind = "http"
            parsed = urllib.parse.urlsplit(location)
            if not parsed.netloc:
                raise UpdateError(f"invalid update source URL {location!r}")
            path = parsed.path
        else:
            self.kind = "dir"
            path = location[len("file://"):] if location.startswith("file://") else location
            if not os.path.isabs(path):
                path = os.path.abspath(path)
        # a source may name the manifest itself; files are found beside it
        self.manifest_name = MANIFEST_NAME
        if path.endswith(".json"):
            self.manifest_name = path.rstrip("/").rsplit("/", 1)[-1]
            path = path[: len(path) - len(self.manifest_name)]
        if self.kind == "http":
            self.base = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path.rstrip("/") + "/", "", ""))
        else:
            self.base = path.rstrip("/") or "/"

    def __str__(self) -> str:
        return self.location

    def fetch(self, relative: str, limit: int, what: str | None = None) -> bytes:
        """The bytes at base/relative; UpdateError if missing, unreadable or longer than limit."""
        what = what or relative
        if self.kind == "http":
            return self._fetch_http(relative, limit, what)
        return self._fetch_file(relative, limit, what)

    def fetch_optional(self, relative: str, limit: int) -> bytes | None:
        """Like fetch, but None when the source simply does not have it (404, no such file)."""
        try:
            return self.fetch(relative, limit)
        except _Missing:
            return None

    def _fetch_file(self, relative: str, limit: int, what: str) -> bytes:
        path = os.path.join(self.base, *relative.split("/"))
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise _Missing(f"{what}: not found in {self.base}") from None
        except OSError as exc:
            raise UpdateError(f"cannot read {path}: {exc.strerror}") from None
        if len(data) > limit:
            raise UpdateError(f"{what} is larger than expected ({limit} bytes)")
        return data

    def _fetch_http(self, relative: str, limit: int, what: str) -> bytes:
        url = self.base + "/".join(urllib.parse.quote(part) for part in relative.split("/"))
        request = urllib.request.Request(url, headers={"User-Agent": "imss-milter-update"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise UpdateError(f"{what} is larger than expected ({declared} > {limit} bytes)")
                chunks, total = [], 0
                while True:
                    chunk = response.read(min(CHUNK, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise UpdateError(f"{what} is larger than expected ({limit} bytes)")
                return b"".join(chunks)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _Missing(f"{what}: not found at {url} (HTTP 404)") from None
            raise UpdateError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise UpdateError(f"cannot download {url}: {exc.reason}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # a connection cut mid-body surfaces as IncompleteRead, a timeout as OSError
            raise UpdateError(f"download of {url} failed: {exc!r}") from None


class _Missing(UpdateError):
    """The source does not have that file (as opposed to failing to serve it)."""
