"""In-process cost of the content decision: MIME parsing and policy evaluation, no MTA.

Complements bench/run.py (which measures under Postfix): here the figures
are CPU milliseconds per message for typical messages, a 10 MB attachment,
a zip bomb, and the policy engine with 10 / 100 / 1,000 / 5,000 keywords
over 100 KB of text (the cost must grow sub-linearly). Medians of repeated
runs; bounded counts.

    python bench/scan_bench.py
"""

from __future__ import annotations

import base64
import io
import os
import random
import statistics
import string
import sys
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.run import make_message  # noqa: E402
from imss_milter.mime import parse_message  # noqa: E402
from imss_milter.mime.model import MessageModel  # noqa: E402
from imss_milter.policy import load_rules  # noqa: E402
from imss_milter.policy.types import Envelope  # noqa: E402


def cpu_ms(function, repeat: int) -> float:
    """Median CPU milliseconds of one call, over 5 batches of `repeat` calls."""
    function()
    batches = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(repeat):
            function()
        batches.append((time.process_time() - started) / repeat * 1000)
    return statistics.median(batches)


def with_attachment(name: str, payload: bytes) -> bytes:
    return (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--zz\r\n"
            b"Content-Type: application/octet-stream; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(payload) + b"--zz--\r\n")


ENGINE_RULES = """\
policies:
  - {name: viruses, when: {virus: true}, actions: [{quarantine: {area: virus}}]}
  - {name: spam, when: {spam: {level: medium}}, actions: [{tag_subject: "[SPAM] "}]}
  - {name: phishing, when: {url.reputation: [phishing]}, actions: [{quarantine: {area: phishing}}]}
"""


def engine_stages(big: bytes) -> None:
    """Per-engine time per message (Runtime.scan timings): antivirus, spam and URL lookups on a
    private rbldnsd, as the daemon runs them; medians over repeated scans."""
    from imss_milter.runtime import Runtime
    from imss_milter.settings import load_settings
    from tests.helpers.rbldnsd import Rbldnsd
    dns = Rbldnsd({"uribl.bench.test": ("dnset", "phish.test :127.0.1.4:listed\n")}).start()
    try:
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "rules"))
            with open(os.path.join(root, "rules", "10.yaml"), "w") as handle:
                handle.write(ENGINE_RULES)
            config = os.path.join(root, "imss-milter.yaml")
            with open(config, "w") as handle:
                handle.write(f"internal_domains: [example.com]\nrules_dir: {root}/rules\nstate_dir: {root}/state\n"
                             f"dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout: 2s}}\n"
                             f"engines:\n  url:\n    zones:\n"
                             f"      - {{zone: uribl.bench.test, type: domain, codes: {{'127.0.1.4': phishing}}}}\n")
            runtime = Runtime(load_settings(config), sender_filter=False, store=False)
            envelope = Envelope(sender="a@example.org", recipients=["user@example.com"], queue_id="BENCH")
            print("Engines per message, ms (median of 30 scans; URL lookups cached after the first)")
            for label, raw, count in (("4 KB", make_message(4096), 30), ("100 KB", make_message(102400), 30),
                                      ("10 MB attachment", big, 3)):
                stages: dict[str, list[float]] = {}
                for _ in range(count):
                    for stage, seconds in runtime.scan(raw, envelope).timings.items():
                        stages.setdefault(stage, []).append(seconds * 1000)
                print(f"  {label:>16}: " + "  ".join(f"{stage} {statistics.median(values):7.2f}"
                                                     for stage, values in sorted(stages.items())))
    finally:
        dns.stop()


def main() -> int:
    envelope = Envelope(sender="a@example.org", recipients=["user@example.com"])
    rules = load_rules(os.path.join(REPO, "rules"), internal_domains=("example.com",))
    print("MIME parse + shipped rules, CPU ms per message (median)")
    for size in (4096, 102400):
        raw = make_message(size)
        parse = cpu_ms(lambda: parse_message(raw), 50)
        model = parse_message(raw)
        policy = cpu_ms(lambda: rules.evaluate(envelope, model), 200)
        print(f"  {len(raw) // 1024:4d} KB MIME message (text, html, pdf, zip): parse {parse:6.2f}  policy {policy:5.2f}")
    big = with_attachment("big.bin", os.urandom(10 * 1024 * 1024))
    print(f"  10 MB attachment: parse {cpu_ms(lambda: parse_message(big), 2):7.1f}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (50 * 1024 * 1024))
    bomb = with_attachment("bomb.zip", buffer.getvalue())
    print(f"  zip bomb (50 MB of zeros in {len(buffer.getvalue()) // 1024} KB): parse {cpu_ms(lambda: parse_message(bomb), 2):7.1f}")
    # tag patterns that rescan the rest of the text for every unclosed "<a href=" are quadratic
    unclosed = ("<html><body>" + "<a href=" * 50_000).encode()
    html_bomb = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: x\r\n"
                 b"Content-Type: text/html\r\n\r\n" + unclosed)
    print(f"  HTML with 50,000 unclosed tags ({len(unclosed) // 1024} KB): parse "
          f"{cpu_ms(lambda: parse_message(html_bomb), 2):7.1f}")

    engine_stages(big)

    print("Keyword conditions over 100 KB of text, CPU ms per evaluation (median)")
    rng = random.Random(7)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 12))) for _ in range(5000)]
    body = " ".join(rng.choice(words[:50] + ["plain", "text", "mail"] * 50) for _ in range(15000))[:100_000]
    model = MessageModel(raw_size=len(body), body_text=body)
    base = None
    with tempfile.TemporaryDirectory() as rules_dir:
        for count in (10, 100, 1000, 5000):
            with open(os.path.join(rules_dir, "10.yaml"), "w") as handle:
                handle.write(f"policies:\n  - name: p\n    route: {{from: any, to: any}}\n"
                             f"    when: {{body: {{keywords: {words[:count]!r}, min_count: 1000000}}}}\n"
                             f"    actions: [delete]\n")
            keyword_rules = load_rules(rules_dir)
            cost = cpu_ms(lambda: keyword_rules.evaluate(envelope, model), 5)
            base = base or cost
            print(f"  {count:5d} keywords: {cost:7.2f}   ({cost / base:4.1f}x the 10-keyword cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
