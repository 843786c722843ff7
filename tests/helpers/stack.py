"""The end-to-end mail path the tests drive: client → Postfix (127.0.0.1) + imss-milter → smtp-sink."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .postfix import PostfixInstance, SmtpSink


# Every stack directory of this test session: tests/conftest.py removes them when the session
# passes and names them when it fails (their logs, maillog and queues are what one reads then).
created_roots: list[str] = []


def e2e_root(prefix: str) -> str:
    """A directory for one stack; world-traversable, since Postfix and the daemon drop privileges."""
    root = tempfile.mkdtemp(prefix=prefix)
    os.chmod(root, 0o755)
    created_roots.append(root)
    return root


@contextlib.contextmanager
def mail_stack(root: str, make_daemon):
    """Start smtp-sink, a Postfix relaying to it, and the daemon make_daemon(postfix) returns
    (not yet started; it may use postfix.reinject_port); yield (sink, postfix, daemon), stop all."""
    sink = SmtpSink(root).start()
    postfix = PostfixInstance(root, relay_port=sink.port)
    daemon = make_daemon(postfix)
    try:
        daemon.start()
        postfix.milter = daemon.milter_spec
        postfix.start()
        yield sink, postfix, daemon
    finally:
        postfix.stop()
        daemon.stop()
        sink.stop()
