"""The rspamd backend: asks an rspamd normal worker over HTTP (POST /checkv2) and reads its score.

Protocol: the raw message is the request body; the envelope goes in the
headers IP, Helo, Hostname, From, Rcpt (one per recipient) and Queue-Id.
The JSON answer has score, required_score, action and symbols
({name: {score, description?}}). One keep-alive connection per thread;
an unreachable or misbehaving rspamd raises RspamdError, which the
runtime answers per the engine's on_error.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import urllib.parse

from ...errors import ImssError
from .builtin import raw_text
from .engine import MESSAGE_RAW_KEY, RuleHit, SpamEngine, SpamResult

CHECK_PATH = "/checkv2"
DEFAULT_URL = "http://127.0.0.1:11333"
MAX_ANSWER = 4 * 1024 * 1024       # an rspamd answer is a few KB; more is not rspamd


class RspamdError(ImssError):
    default_message = "rspamd check failed"


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an http:// rspamd URL; ValueError when it is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL like {DEFAULT_URL}, got {url!r}")
    try:
        port = parts.port or 11333
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    return parts.hostname, port, parts.path.rstrip("/")


def request_headers(envelope, queue_id: str | None = None) -> list[tuple[str, str]]:
    """The rspamd request headers for an envelope (only facts the MTA gave; no empty values)."""
    headers = []
    if envelope.client_ip:
        headers.append(("IP", envelope.client_ip.strip("[]").removeprefix("IPv6:")))
    if envelope.helo:
        headers.append(("Helo", envelope.helo))
    if envelope.client_name:
        headers.append(("Hostname", envelope.client_name))
    headers.append(("From", envelope.sender or "<>"))
    for recipient in envelope.recipients:
        headers.append(("Rcpt", recipient))
    if queue_id or envelope.queue_id:
        headers.append(("Queue-Id", queue_id or envelope.queue_id))
    # header values go on the wire as they are: never let one carry a line break
    return [(name, _one_line(value)) for name, value in headers]


def _one_line(value: str) -> str:
    return "".join(" " if c in "\r\n\0" else c for c in str(value))


def parse_answer(body: bytes) -> SpamResult:
    """A SpamResult from rspamd's JSON answer; RspamdError when it is not one."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RspamdError(f"rspamd answer is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise RspamdError("rspamd answer is not a JSON object")
    if "error" in answer and "score" not in answer:
        raise RspamdError(f"rspamd refused the message: {answer['error']}")
    score = _finite(answer.get("score"))
    if score is None:
        raise RspamdError(f"rspamd answer has no numeric score: {str(answer)[:200]}")
    result = SpamResult(score=score)
    symbols = answer.get("symbols")
    if isinstance(symbols, dict):
        for name, symbol in symbols.items():
            symbol = symbol if isinstance(symbol, dict) else {}
            result.hits.append(RuleHit(str(name), _finite(symbol.get("score")) or 0.0,
                                       str(symbol.get("description") or "")))
    result.hits.sort(key=lambda hit: (-abs(hit.score), hit.name))
    required = _finite(answer.get("required_score"))
    result.extra = {"action": str(answer.get("action", "")),
                    **({"required_score": required} if required is not None else {})}
    return result


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class RspamdClient:
    """POST /checkv2 over a keep-alive connection per thread (pymilter runs a thread per connection)."""

    def __init__(self, url: str, timeout: float):
        self.host, self.port, self.prefix = parse_url(url)
        self.timeout = timeout
        self._local = threading.local()

    def check(self, message: bytes, headers: list[tuple[str, str]]) -> SpamResult:
        reused = getattr(self._local, "connection", None) is not None
        try:
            return self._post(message, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if not reused:
                raise RspamdError(f"rspamd at {self.host}:{self.port}: {exc}") from None
        # rspamd may have closed an idle keep-alive connection: one fresh try
        try:
            return self._post(message, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise RspamdError(f"rspamd at {self.host}:{self.port}: {exc}") from None

    def _post(self, message: bytes, headers) -> SpamResult:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        connection.putrequest("POST", self.prefix + CHECK_PATH, skip_accept_encoding=True)
        for name, value in [*headers, ("Content-Length", str(len(message))), ("Connection", "keep-alive")]:
            connection.putheader(name, value)
        connection.endheaders(message)
        response = connection.getresponse()
        body = response.read(MAX_ANSWER + 1)
        if response.will_close:
            self.close()
        if len(body) > MAX_ANSWER:
            self.close()
            raise RspamdError("rspamd answer too large")
        if response.status != 200:
            raise RspamdError(f"rspamd answered HTTP {response.status} {response.reason}: "
                              f"{body[:200].decode('utf-8', 'replace')}")
        return parse_answer(body)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def reset_after_fork(self) -> None:
        # the parent's sockets must not be shared: a new thread-local starts empty
        self._local = threading.local()


class RspamdSpamEngine(SpamEngine):
    blocking = True         # waits on rspamd: prepare() runs in the engine pool, beside the others
    def __init__(self, config, client: RspamdClient, options=None):
        super().__init__(config, options)
        self.client = client

    def score_message(self, model, envelope, scratch: dict) -> SpamResult:
        raw = scratch.get(MESSAGE_RAW_KEY)
        if not isinstance(raw, (bytes, bytearray)):
            # without the runtime's raw bytes, rspamd still gets the headers and text of the message
            raw = raw_text(model, scratch).encode("utf-8", "replace")
        return self.client.check(bytes(raw), request_headers(envelope))

    def reset_after_fork(self) -> None:
        self.client.reset_after_fork()
