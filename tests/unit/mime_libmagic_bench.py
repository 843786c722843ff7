"""Benchmark (not a test): parse_message cost when every SMTP connection is a
new thread, as in the milter. Run: .venv/bin/python tests/unit/mime_libmagic_bench.py

Builds a ~4 KB and a ~100 KB multipart message, each with a PDF and a zip,
and parses each ITERATIONS times, starting a fresh thread for every
PER_THREAD messages (a connection that sends a few messages).
"""

import base64
import io
import os
import random
import sys
import threading
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from imss_milter.mime import parse_message  # noqa: E402

ITERATIONS = 2000
PER_THREAD = 2


def message(text_size: int, pdf_size: int) -> bytes:
    rng = random.Random(text_size)
    words = ["invoice", "payment", "meeting", "report", "please", "thanks", "deadline"]
    text = " ".join(rng.choice(words) for _ in range(text_size // 7)).encode()
    pdf = b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(pdf_size))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", text[:2000])
        z.writestr("data.bin", bytes(rng.randrange(256) for _ in range(pdf_size // 2)))
    return (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n--zz\r\n"
            b'Content-Type: application/pdf; name="r.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + base64.encodebytes(pdf) + b"--zz\r\n"
            b'Content-Type: application/zip; name="r.zip"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + base64.encodebytes(zipped.getvalue()) + b"--zz--\r\n")


def run(raw: bytes) -> float:
    """CPU seconds per message (process time: other load on the machine does
    not count), parsing in a fresh thread per PER_THREAD messages."""
    def connection():
        for _ in range(PER_THREAD):
            parse_message(raw)
    started = time.process_time()
    for _ in range(ITERATIONS // PER_THREAD):
        thread = threading.Thread(target=connection)
        thread.start()
        thread.join()
    return (time.process_time() - started) / ITERATIONS


def main():
    small = message(1200, 1000)
    large = message(30000, 40000)
    parse_message(small)
    for label, raw in (("4 KB", small), ("100 KB", large)):
        best = min(run(raw) for _ in range(5))
        print(f"{label:>7} message ({len(raw)} bytes): {best * 1e6:8.0f} us CPU per message")


if __name__ == "__main__":
    main()
