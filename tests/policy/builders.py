"""Build rule sets and message models inline for policy tests (no MIME parser needed)."""

from __future__ import annotations

import textwrap

from imss_milter.mime.model import Limits, MessageModel, Part
from imss_milter.policy import Envelope, load_rules


def write_rules(tmp_path, *texts: str, names=None):
    """Write rule files 10-rules.yaml, 20-rules.yaml... (or given names) into tmp_path/rules."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    paths = []
    for index, text in enumerate(texts):
        name = names[index] if names else f"{(index + 1) * 10:02d}-rules.yaml"
        path = rules_dir / name
        path.write_text(textwrap.dedent(text))
        paths.append(str(path))
    return str(rules_dir), paths


def rules(tmp_path, *texts: str, internal_domains=("example.com",), limits=Limits(), engines=None):
    rules_dir, _ = write_rules(tmp_path, *texts)
    return load_rules(rules_dir, internal_domains=internal_domains, limits=limits, engines=engines)


def attachment(name="file.bin", payload=b"data", true_type="unknown", mime="application/octet-stream",
               declared_type="application/octet-stream", path=None, **extra) -> Part:
    names = [name] if isinstance(name, str) else list(name)
    return Part(path=path or [names[0] if names else "part"], payload=payload, declared_type=declared_type,
                names=names, true_type=true_type, mime=mime, is_attachment=True, **extra)


def body_part(text="hello", declared_type="text/plain") -> Part:
    return Part(path=["body"], payload=text.encode(), declared_type=declared_type, true_type="text",
                mime="text/plain", is_text_body=True)


def message(subject="hello", body="hello world", parts=(), headers=(), size=None, flags=(), notes=()) -> MessageModel:
    all_parts = [body_part(body)] + list(parts)
    headers = [("Subject", subject)] + list(headers)
    raw_size = size if size is not None else len(body) + sum(p.size for p in all_parts) + 200
    return MessageModel(raw_size=raw_size, headers=headers, subject=subject, parts=all_parts, body_text=body,
                        flags=set(flags), notes=list(notes))


def inbound(sender="someone@outside.test", recipients=("user@example.com",), ip="192.0.2.10") -> Envelope:
    return Envelope(sender=sender, recipients=list(recipients), client_ip=ip)
