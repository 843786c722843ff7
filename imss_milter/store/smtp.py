"""SMTP reinjection of a held message with its original envelope (used by release)."""

from __future__ import annotations

import re
import smtplib
import socket

from imss_milter.errors import StoreError

_BARE_LF = re.compile(rb"(?<!\r)\n")


def wire_format(raw: bytes) -> bytes:
    """CRLF line ends, as SMTP DATA requires; smtplib sends bytes unchanged."""
    return _BARE_LF.sub(b"\r\n", raw)


def _mail_options(raw: bytes, sender: str, recipients: list[str], server: smtplib.SMTP) -> list[str]:
    options = []
    if any(byte > 127 for byte in raw) and server.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not (sender + "".join(recipients)).isascii():
        if not server.has_extn("smtputf8"):
            raise StoreError("the release server does not offer SMTPUTF8, needed for a non-ASCII address")
        options.append("SMTPUTF8")
    return options


def _reply_text(code, message) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return f"{code} {message}".strip()


def reinject(raw: bytes, sender: str, recipients: list[str], host: str, port: int,
             timeout: float = 60.0) -> dict[str, str]:
    """Send raw as MAIL FROM:<sender> (""  is the null sender <>) to every recipient.

    Returns {recipient: reply} for recipients the server refused while it
    accepted others; raises StoreError carrying the server's reply when
    nothing was accepted or the connection failed.
    """
    where = f"{host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as server:
            server.ehlo_or_helo_if_needed()
            options = _mail_options(raw, sender, recipients, server)
            refused = server.sendmail(sender, recipients, wire_format(raw), mail_options=options)
    except smtplib.SMTPRecipientsRefused as error:
        replies = "; ".join(f"{rcpt}: {_reply_text(*reply)}" for rcpt, reply in error.recipients.items())
        raise StoreError(f"release via {where} refused every recipient: {replies}") from error
    except smtplib.SMTPSenderRefused as error:
        raise StoreError(f"release via {where}: sender <{sender}> refused: "
                         f"{_reply_text(error.smtp_code, error.smtp_error)}") from error
    except smtplib.SMTPResponseException as error:
        raise StoreError(f"release via {where} failed: {_reply_text(error.smtp_code, error.smtp_error)}") from error
    except (smtplib.SMTPException, OSError, socket.timeout) as error:
        raise StoreError(f"release via {where} failed: {error or type(error).__name__}") from error
    return {rcpt: _reply_text(*reply) for rcpt, reply in refused.items()}
