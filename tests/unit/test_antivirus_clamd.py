"""The clamd backend without a clamd: addresses, reply parsing, INSTREAM framing, config errors, limits, failures."""

from __future__ import annotations

import struct
from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from imss_milter.engines import EngineOptions
from imss_milter.engines import antivirus
from imss_milter.engines.antivirus.clamd import (Address, ClamdError, StreamTooLarge, instream_frames,
                                                 parse_address, parse_reply)
from imss_milter.errors import ConfigError
from imss_milter.mime import parse_message
from imss_milter.mime.model import FLAG_ARCHIVE_LIMIT
from imss_milter.yamlconf import loads_yaml


@pytest.mark.parametrize("text, address", [
    ("unix:/run/clamav/clamd.ctl", Address(path="/run/clamav/clamd.ctl")),
    ("local:/tmp/c.sock", Address(path="/tmp/c.sock")),
    ("/run/clamav/clamd.ctl", Address(path="/run/clamav/clamd.ctl")),
    ("inet:3310@10.0.0.5", Address(host="10.0.0.5", port=3310)),
    ("inet:3310", Address(host="127.0.0.1", port=3310)),
    ("clamd.example.com:3310", Address(host="clamd.example.com", port=3310)),
    ("[2001:db8::1]:3310", Address(host="2001:db8::1", port=3310)),
])
def test_socket_forms(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["unix:relative", "inet:99999@h", "host", "host:port", "", "inet:0@h"])
def test_bad_socket_forms(text):
    with pytest.raises(ValueError, match="expected unix:"):
        parse_address(text)


@pytest.mark.parametrize("reply, name", [
    (b"stream: OK\0", None),
    (b"1: stream: OK\0", None),
    (b"stream: Eicar-Test-Signature FOUND\0", "Eicar-Test-Signature"),
    (b"12: stream: Win.Spyware.Test-1.UNOFFICIAL FOUND\0", "Win.Spyware.Test-1.UNOFFICIAL"),
    (b"stream: Heuristics.Encrypted.Zip FOUND\n", "Heuristics.Encrypted.Zip"),
])
def test_replies(reply, name):
    assert parse_reply(reply) == name


def test_error_replies_raise():
    with pytest.raises(StreamTooLarge):
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0")
    with pytest.raises(ClamdError, match="Can't allocate memory ERROR"):
        parse_reply(b"3: Can't allocate memory ERROR\0")
    with pytest.raises(ClamdError, match="unexpected reply"):
        parse_reply(b"UNKNOWN COMMAND\0")
    with pytest.raises(ClamdError, match="unexpected reply"):
        parse_reply(b"stream:  FOUND\0")


def test_instream_frames_are_length_prefixed_chunks_and_a_zero_terminator():
    payload = bytes(range(256)) * 10
    frames = [bytes(frame) for frame in instream_frames(payload, chunk_size=1000)]
    assert [struct.unpack(">I", frames[i])[0] for i in range(0, len(frames), 2)] == [1000, 1000, 560, 0]
    assert b"".join(frames[1::2]) == payload
    assert [bytes(f) for f in instream_frames(b"")] == [b"\0\0\0\0"]


# ---------------------------------------------------------------- config

def build(yaml_text: str):
    section = loads_yaml(yaml_text, file="/etc/imss-milter/imss-milter.yaml")
    options = EngineOptions(name="antivirus", backend="clamd", timeout=5.0, section=section)
    return antivirus.build(options, SimpleNamespace(patterns_dir=None))


def test_clamd_section_is_built_without_contacting_clamd():
    engine = build("backend: clamd\nsocket: unix:/nonexistent/clamd.ctl\nmax_stream: 10MB\n")
    assert engine.backend == "clamd" and engine.max_stream == 10 * 1024 * 1024
    assert build("backend: clamd\nsocket: inet:3310@127.0.0.1\n").max_stream == 25 * 1024 * 1024


@pytest.mark.parametrize("text, line, words", [
    ("backend: clamd\n", 1, "needs the socket"),
    ("backend: clamd\nsocket: clamd\n", 2, "expected unix:"),
    ("backend: clamd\nsocket: unix:/x\nmax_stream: lots\n", 3, "max_stream"),
    ("backend: clamd\nsocket: unix:/x\nmax_stream: 0\n", 3, "more than 0"),
    ("backend: clamd\nsocket: unix:/x\nstream_max: 1MB\n", 3, "unknown key 'stream_max'"),
])
def test_bad_clamd_sections_name_the_line(text, line, words):
    with pytest.raises(ConfigError) as error:
        build(text)
    assert error.value.line == line and words in str(error.value)


# ---------------------------------------------------------------- behaviour that needs no answer from clamd

def message_with(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.com"
    msg["Subject"] = "big"
    msg.set_content("")
    msg.add_attachment(b"\0" * size, maintype="application", subtype="octet-stream", filename="big.bin")
    return msg.as_bytes()


def test_a_part_over_max_stream_is_not_sent_but_flagged_as_unscanned(tmp_path):
    # clamd is not running: had the part been sent, the scan would fail
    engine = build(f"backend: clamd\nsocket: unix:{tmp_path}/none.sock\nmax_stream: 1KB\n")
    raw = message_with(4096)
    model = parse_message(raw)
    model.parts = [part for part in model.parts if part.name == "big.bin"]
    scratch: dict = {}
    engine.prepare(model, None, scratch)
    assert engine.check("virus", (), model, None, scratch) == []
    assert FLAG_ARCHIVE_LIMIT in model.flags
    assert any("big.bin" in note and "max_stream" in note for note in model.notes)


def test_clamd_down_raises(tmp_path):
    engine = build(f"backend: clamd\nsocket: unix:{tmp_path}/none.sock\n")
    model = parse_message(message_with(100))
    with pytest.raises(ClamdError, match="unreachable"):
        engine.prepare(model, None, {})
    assert not engine.client.ping()


def test_clamd_refusing_tcp_raises():
    from tests.helpers.net import free_port
    engine = build(f"backend: clamd\nsocket: 127.0.0.1:{free_port()}\n")
    with pytest.raises(ClamdError, match="unreachable"):
        engine.check("virus", (), parse_message(message_with(10)), None, {})


def test_sessions_made_before_a_fork_are_not_reused(tmp_path):
    import os
    import socket as socket_module
    from imss_milter.engines.antivirus.clamd import Session, SessionPool
    path = str(tmp_path / "listener.sock")
    with socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(4)
        pool = SessionPool(Address(path=path), timeout=2.0)
        parent_session = Session(Address(path=path), 2.0)
        pool.give_back(parent_session)
        assert pool.idle == [parent_session]
        parent_session.pid = os.getpid() + 1          # as the child of a fork sees it
        fresh, reused = pool.take()
        assert fresh is not parent_session and not reused
        assert parent_session.sock.fileno() == -1
        pool.idle = [fresh]
        pool.reset()
        assert pool.idle == [] and fresh.sock.fileno() == -1
