"""DLP cost against the number of keywords and identifiers: 10 / 100 / 1,000 keywords plus the 20+
identifiers over 100 KB of text and over a 2 MB docx (built here), then 1 against 20 expression
identifiers. Scanning is one pass for all of them (a keyword trie, a Hyperscan prefilter for the
expressions), so the time should grow far slower than the counts. Each case is also timed with one
pass per expression identifier (the former scanner) for comparison.

    .venv/bin/python bench/dlp_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import string
import sys
import time
import zipfile

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))

from imss_milter.engines.dlp import compile_dlp, extract_document   # noqa: E402
from imss_milter.engines.dlp.identifiers import ExpressionIdentifier   # noqa: E402
from imss_milter.engines.dlp.scanner import Scanner   # noqa: E402
from imss_milter.mime.model import Part   # noqa: E402
from imss_milter.yamlconf import loads_yaml   # noqa: E402

SEED_VALUES = ["4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "536-22-1234", "john.doe@example.com",
               "+44 20 7946 0958", "192.0.2.10", "DOB 1985-03-14", "AKIAIOSFODNN7EXAMPLE", "PRJ-123456"]


def words(count: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 11))) for _ in range(count)]


def corpus(size: int, vocabulary: list[str], rng: random.Random) -> str:
    """Prose-like text with numbers, addresses and a sensitive value every ~2 KB."""
    out, length = [], 0
    while length < size:
        if rng.random() < 0.004:
            piece = rng.choice(SEED_VALUES)
        elif rng.random() < 0.05:
            piece = str(rng.randint(1, 10 ** rng.randint(1, 8)))
        else:
            piece = rng.choice(vocabulary)
        out.append(piece)
        length += len(piece) + 1
        if rng.random() < 0.08:
            out.append("\n")
    return " ".join(out)[:size]


def rules(keywords: list[str]) -> dict:
    """Seven admin identifiers beside the 13 predefined text identifiers: 20, plus one big keyword list."""
    quoted = ", ".join(f'"{k}"' for k in keywords)
    text = f"""\
dlp:
  identifiers:
    project-code: {{type: expression, pattern: "PRJ-\\\\d{{6}}"}}
    invoice-ref: {{type: expression, pattern: "INV-[A-Z]{{2}}\\\\d{{5}}"}}
    employee-id: {{type: expression, pattern: "EMP\\\\d{{7}}", validator: luhn}}
    ticket: {{type: expression, pattern: "(?:JIRA|TCK)-\\\\d{{3,6}}"}}
    cvv-words: {{type: keywords, items: [cvv, cvc, "security code"]}}
    confidential: {{type: keywords, items: ["strictly confidential", "internal use only"]}}
    watched: {{type: keywords, items: [{quoted}]}}
  templates:
    watched-words: {{identifier: watched, min_count: 3}}
"""
    return loads_yaml(text, "bench.yaml")["dlp"]


def make_docx(text: str) -> bytes:
    paragraphs = "".join(f'<w:p><w:r><w:t xml:space="preserve">{line}</w:t></w:r></w:p>' for line in text.split("\n"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", f"<w:document><w:body>{paragraphs}</w:body></w:document>")
    return buffer.getvalue()


def timed(function, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(42)
    vocabulary = words(20000, rng)
    text = corpus(100 * 1024, vocabulary[:5000], rng)
    # a docx of about 2 MB compressed: random words compress about 3:1
    docx_text = corpus(3 * 1024 * 1024, vocabulary, rng)
    docx = make_docx(docx_text)
    part = Part(path=["big.docx"], payload=docx, names=["big.docx"], true_type="document", is_attachment=True)
    extraction_seconds = timed(lambda: extract_document(part), max(1, args.repeat // 2))
    extracted = extract_document(part).text

    print(f"text: {len(text) // 1024} KB; docx: {len(docx) / 1e6:.1f} MB compressed, "
          f"{len(extracted) / 1e6:.1f} M characters of text (extraction {extraction_seconds * 1000:.0f} ms)")
    print("median ms; 'single' = one scan for all identifiers, 'per-id' = one pass per expression identifier")
    print(f"{'keywords':>9} {'identifiers':>12} {'100 KB single':>14} {'per-id':>8} "
          f"{'2 MB docx single':>17} {'per-id':>8} {'matches':>8}")
    by_count = {}
    for count in (10, 100, 1000):
        keywords = rng.sample(vocabulary[:5000], count // 2) + rng.sample(vocabulary[5000:], count - count // 2)
        config = compile_dlp([rules(keywords)])
        text_identifiers = sum(1 for i in config.identifiers.values() if i.kind in ("expression", "keywords"))
        figures = [timed(lambda: config.scanner.scan(subject), repeat)
                   for single in (True, False) for subject, repeat in ((text, args.repeat),
                                                                        (extracted, max(1, args.repeat // 2)))
                   if _mode(config.scanner, single)]
        del config.scanner.single_pass
        single_text, single_docx, separate_text, separate_docx = figures
        by_count[count] = single_text
        matches = sum(len(m) for m in config.scanner.scan(text).matches.values())
        print(f"{count:>9} {text_identifiers:>12} {single_text * 1000:>14.1f} {separate_text * 1000:>8.1f} "
              f"{(single_docx + extraction_seconds) * 1000:>17.0f} {(separate_docx + extraction_seconds) * 1000:>8.0f}"
              f" {matches:>8}")
    print(f"1,000 keywords / 10 keywords (100 KB, single): {by_count[1000] / by_count[10]:.2f}x")

    expressions = [i for i in compile_dlp([rules(vocabulary[:10])]).identifiers.values()
                   if isinstance(i, ExpressionIdentifier)]
    expressions += [ExpressionIdentifier(f"variant-{n}", f"REF{n}-\\d{{5}}(?!\\d)") for n in range(20)]
    print(f"{'expression identifiers':>24} {'100 KB single':>14} {'per-id':>8}")
    by_size = {}
    for size in (1, 20):
        scanner = Scanner({i.name: i for i in expressions[:size]})
        single = timed(lambda: scanner.scan(text), args.repeat * 4)
        scanner.single_pass = False
        separate = timed(lambda: scanner.scan(text), args.repeat * 4)
        by_size[size] = (single, separate)
        print(f"{size:>24} {single * 1000:>14.2f} {separate * 1000:>8.2f}")
    print(f"20 identifiers / 1 identifier (100 KB): single {by_size[20][0] / by_size[1][0]:.1f}x, "
          f"per-id {by_size[20][1] / by_size[1][1]:.1f}x")
    return 0


def _mode(scanner, single: bool) -> bool:
    scanner.single_pass = single
    return True


if __name__ == "__main__":
    sys.exit(main())
