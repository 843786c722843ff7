"""Each condition of SPEC §4 on inline message models: what matches, what does not, and the evidence."""

import time

import pytest

from imss_milter.mime.model import FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED, Limits
from imss_milter.policy.conditions import extensions
from tests.policy.builders import attachment, inbound, message, rules


def matcher(tmp_path, condition_yaml: str, **kwargs):
    """A rule set with one policy `p` whose `when:` is condition_yaml; returns evaluate(envelope, model)."""
    indented = "\n".join("      " + line for line in condition_yaml.strip().splitlines())
    ruleset = rules(tmp_path, f"policies:\n  - name: p\n    when:\n{indented}\n    actions: [delete]\n", **kwargs)

    def matches(model, envelope=None, engines=None) -> bool:
        verdict = ruleset.evaluate(envelope or inbound(), model, engines)
        matches.verdict = verdict
        return verdict.rules == ["p"]
    return matches


def test_message_size(tmp_path):
    bigger = matcher(tmp_path, "message.size: '>10KB'")
    assert bigger(message(size=10 * 1024 + 1))
    assert not bigger(message(size=10 * 1024))
    assert bigger.verdict.findings == []
    small = matcher(tmp_path, "message.size: '<= 1KB'")
    assert small(message(size=1024)) and not small(message(size=1025))


def test_attachment_name_globs_case_insensitive_any_candidate(tmp_path):
    match = matcher(tmp_path, "attachment.name: ['*.exe', 'invoice_??.pdf']")
    assert match(message(parts=[attachment("SETUP.EXE")]))
    assert match(message(parts=[attachment(["harmless.txt", "evil.exe"])]))     # any candidate name
    assert match(message(parts=[attachment("invoice_12.pdf")]))
    assert not match(message(parts=[attachment("invoice_123.pdf")]))
    assert not match(message(parts=[attachment("exe.txt")]))
    # a name inside an archive counts: archive members are parts of their own
    member = attachment("payload.exe", path=["a.zip", "payload.exe"], origin="archive")
    assert match(message(parts=[attachment("a.zip", true_type="archive"), member]))
    assert match.verdict.findings[0]["path"] == ["a.zip", "payload.exe"]


def test_extensions_helper():
    assert extensions("a.pdf.exe") == ["exe", "pdf"]
    assert extensions("Report.Final.DOCX") == ["docx", "final"]
    assert extensions("trailing.exe. . ") == ["exe"]          # Windows drops trailing dots and spaces
    assert extensions("C:\\temp\\x.scr") == ["scr"]
    assert extensions("noext") == []


def test_attachment_extension_last_and_double(tmp_path):
    match = matcher(tmp_path, "attachment.extension: [exe, .PDF]")
    assert match(message(parts=[attachment("a.pdf.exe")]))
    assert match(message(parts=[attachment("report.pdf")]))
    assert match(message(parts=[attachment("virus.exe.")]))
    assert not match(message(parts=[attachment("exe.zip")]))
    assert not match(message(parts=[attachment("notes.txt")]))


def test_attachment_true_type_categories_and_mime(tmp_path):
    match = matcher(tmp_path, "attachment.true_type: [executable, application/x-sharedlib, 'video/*']")
    assert match(message(parts=[attachment("a.pdf", true_type="executable", mime="application/x-dosexec")]))
    assert match(message(parts=[attachment("lib", mime="application/x-sharedlib")]))
    assert match(message(parts=[attachment("clip", true_type="video", mime="video/mp4")]))
    # the declared type and the name do not count, only the content
    assert not match(message(parts=[attachment("a.exe", true_type="pdf", mime="application/pdf",
                                                declared_type="application/x-msdownload")]))


def test_attachment_size_and_count(tmp_path):
    size = matcher(tmp_path, "attachment.size: '>1KB'")
    assert size(message(parts=[attachment("s"), attachment("big", payload=b"x" * 1025)]))
    assert not size(message(parts=[attachment("s", payload=b"x" * 1024)]))
    count = matcher(tmp_path, "attachment.count: '>=2'")
    assert count(message(parts=[attachment("a"), attachment("b")]))
    assert not count(message(parts=[attachment("a")]))


def test_mime_content_type(tmp_path):
    match = matcher(tmp_path, "mime.content_type: ['application/x-ms*', 'message/partial']")
    assert match(message(parts=[attachment("x", declared_type="application/x-msdownload")]))
    assert match(message(parts=[attachment("x", declared_type="message/partial")]))
    assert not match(message(parts=[attachment("x", declared_type="application/pdf")]))


def test_header_regex_and_keywords(tmp_path):
    regex_match = matcher(tmp_path, "header: {name: X-Mailer, matches: '^Mass ?Mailer \\d+'}")
    assert regex_match(message(headers=[("x-mailer", "MassMailer 5")]))
    assert not regex_match(message(headers=[("X-Mailer", "Thunderbird")]))
    assert not regex_match(message())
    keywords = matcher(tmp_path, "header: {name: Received, keywords: [evil.test]}")
    assert keywords(message(headers=[("Received", "from a.test"), ("Received", "from mx.evil.test")]))
    assert not keywords(message(headers=[("Received", "from notevil.testing")]))


def test_subject_keywords_word_boundaries_and_case(tmp_path):
    match = matcher(tmp_path, "subject: {keywords: [free money, c++, CVV]}")
    assert match(message(subject="Get FREE   money".replace("   ", " ")))
    assert match(message(subject="I like C++ a lot"))
    assert match(message(subject="send cvv now"))
    assert not match(message(subject="cvvx and freemoney"))
    sensitive = matcher(tmp_path, "subject: {keywords: [CVV], case_sensitive: true}")
    assert sensitive(message(subject="CVV")) and not sensitive(message(subject="cvv"))
    shorthand = matcher(tmp_path, "subject: [urgent]")
    assert shorthand(message(subject="URGENT: pay")) and not shorthand(message(subject="urgently"))


def test_body_expressions_and_list(tmp_path):
    match = matcher(tmp_path, "body: {expressions: ['PRJ-\\d{6}']}")
    assert match(message(body="see prj-123456 please"))      # case-insensitive by default
    assert not match(message(body="see PRJ-12345"))
    lists = """\
        lists:
          secret: {type: keywords, items: [strictly confidential, internal use only]}
          codes: {type: expressions, case_sensitive: true, items: ['\\bAB\\d{3}\\b']}
        policies:
          - name: p
            when: {body: {list: [secret, codes]}}
            actions: [delete]
        """
    ruleset = rules(tmp_path, lists)
    assert ruleset.evaluate(inbound(), message(body="This is Internal Use Only.")).rules == ["p"]
    assert ruleset.evaluate(inbound(), message(body="code AB123 here")).rules == ["p"]
    assert ruleset.evaluate(inbound(), message(body="code ab123 here")).rules == []


def test_min_count_counts_all_matches(tmp_path):
    match = matcher(tmp_path, "body: {keywords: [ssn, passport], min_count: 3}")
    assert match(message(body="ssn ssn passport"))
    assert not match(message(body="ssn passport"))


def test_distance_needs_two_different_keywords_close_together(tmp_path):
    match = matcher(tmp_path, "body: {keywords: [card number, cvv], distance: 20}")
    assert match(message(body="card number 4111 then cvv 123"))
    assert not match(message(body="card number " + "x" * 40 + " cvv"))
    assert not match(message(body="cvv cvv cvv"))              # the same keyword twice is not enough


def test_attachment_content_text_and_binary(tmp_path):
    match = matcher(tmp_path, "attachment.content: {keywords: [top secret]}")
    text_part = attachment("notes.txt", payload="Ceci est TOP SECRET, merci".encode("utf-16"),
                           true_type="text", mime="text/plain", declared_type="text/plain", charset="utf-16")
    assert match(message(parts=[text_part]))
    assert match.verdict.findings[0]["path"] == ["notes.txt"]
    html_part = attachment("a.html", payload=b"<p>top <b>secret</b></p>", true_type="html", mime="text/html")
    assert match(message(parts=[html_part]))
    legacy_doc = attachment("a.doc", payload=b"\xd0\xcf\x11\xe0\x00\x00This is top secret stuff\x00\x01",
                            true_type="document")
    assert match(message(parts=[legacy_doc]))
    assert not match(message(body="top secret", parts=[attachment("a.txt", payload=b"nothing")]))
    # media carry no words: random bytes in an image must not match
    image = attachment("a.png", payload=b"\x89PNG top secret", true_type="image", mime="image/png")
    assert not match(message(parts=[image]))


def test_attachment_content_text_extractor_hook(tmp_path, monkeypatch):
    from imss_milter.policy import context
    monkeypatch.setattr(context, "TEXT_EXTRACTORS", [])
    context.register_text_extractor(lambda part: "extracted quarterly figures" if part.name.endswith(".pdf")
                                    else None)
    match = matcher(tmp_path, "attachment.content: {keywords: [quarterly figures]}")
    assert match(message(parts=[attachment("r.pdf", payload=b"%PDF-1.7 compressed", true_type="pdf")]))
    assert not match(message(parts=[attachment("r.bin", payload=b"%PDF-1.7 compressed")]))


@pytest.mark.parametrize("flag,name", [(FLAG_MALFORMED, "malformed"), (FLAG_ARCHIVE_LIMIT, "archive.limit_exceeded"),
                                       ("encrypted", "encrypted")])
def test_scanning_exception_flags(tmp_path, flag, name):
    match = matcher(tmp_path, f"{name}: true")
    assert match(message(flags=[flag], notes=["why it was set"]))
    assert "why it was set" in match.verdict.findings[0]["detail"]
    assert not match(message())
    negated = matcher(tmp_path, f"{name}: false")
    assert negated(message()) and not negated(message(flags=[flag]))


def test_encrypted_part_counts_without_the_flag(tmp_path):
    match = matcher(tmp_path, "encrypted: true")
    assert match(message(parts=[attachment("a.zip", true_type="archive", encrypted=True)]))


def test_sender_ip_v4_v6_and_mapped(tmp_path):
    match = matcher(tmp_path, "sender.ip: [192.0.2.0/24, '2001:db8::/32', 198.51.100.7]")
    assert match(message(), inbound(ip="192.0.2.200"))
    assert match(message(), inbound(ip="198.51.100.7"))
    assert match(message(), inbound(ip="2001:db8::1"))
    assert match(message(), inbound(ip="::ffff:192.0.2.5"))
    assert match(message(), inbound(ip="[IPv6:2001:db8::2]"))
    assert not match(message(), inbound(ip="203.0.113.9"))
    assert not match(message(), inbound(ip=None))
    assert not match(message(), inbound(ip="not-an-ip"))


def test_sender_address_patterns_and_groups(tmp_path):
    match = matcher(tmp_path, "sender.address: ['*@spam.test', 'bad@', '@*.evil.test']")
    assert match(message(), inbound(sender="Anyone@SPAM.test"))
    assert match(message(), inbound(sender="bad@anywhere.test"))
    assert match(message(), inbound(sender="x@mx.evil.test"))
    assert not match(message(), inbound(sender="good@ham.test"))
    assert not match(message(), inbound(sender=""))
    outside = matcher(tmp_path, "sender.address: '!internal'")
    assert outside(message(), inbound(sender="a@elsewhere.test"))
    assert outside(message(), inbound(sender=""))               # the null sender is not internal
    assert not outside(message(), inbound(sender="a@dept.example.com"))


class FakeEngine:
    """Implements the documented engine protocol; records what it was asked."""

    def __init__(self, findings_for):
        self.findings_for = findings_for
        self.calls = []

    def check(self, condition, argument, model, envelope, scratch):
        self.calls.append((condition, argument))
        scratch["scans"] = scratch.get("scans", 0) + 1
        return self.findings_for(condition, argument)


def test_engine_conditions_use_the_protocol_and_cache(tmp_path):
    ruleset = rules(tmp_path, """\
        policies:
          - name: v1
            when: {virus: [virus, spyware]}
            actions: [{quarantine: {area: virus}}]
          - name: v2
            when: {virus: [spyware, virus]}
            actions: [{add_header: {name: X-V, value: "1"}}]
          - name: s
            when: {spam: {score: ">=5"}}
            actions: [{tag_subject: "[SPAM] "}]
        """, engines=["antivirus", "spam"])
    antivirus = FakeEngine(lambda c, a: [{"detail": "Eicar-Test-Signature", "category": "virus"}])
    spam = FakeEngine(lambda c, a: [])
    verdict = ruleset.evaluate(inbound(), message(), {"antivirus": antivirus, "spam": spam})
    assert verdict.rules == ["v1", "v2"] and verdict.action == "quarantine"
    assert antivirus.calls == [("virus", ("spyware", "virus"))]     # same question asked once per message
    assert spam.calls == [("spam", ("score", ">=", 5.0))]
    assert {"rule": "v1", "condition": "virus", "detail": "Eicar-Test-Signature", "category": "virus"} \
        in verdict.findings


def test_engine_not_configured_is_false_with_a_finding(tmp_path):
    match = matcher(tmp_path, "virus: true")
    assert not match(message())
    assert {"rule": "p", "condition": "virus", "detail": "engine not configured"} in match.verdict.findings
    negated = matcher(tmp_path, "not: {url.reputation: [phishing]}")
    assert negated(message())


def test_pathological_expression_times_out_quickly_and_does_not_match(tmp_path):
    match = matcher(tmp_path, "body: {expressions: ['(x+x+)+y']}", limits=Limits(regex_timeout=0.05))
    started = time.monotonic()
    assert not match(message(body="x" * 5000))
    assert time.monotonic() - started < 1.0
    timeouts = [f for f in match.verdict.findings if "timed out" in f["detail"]]
    assert timeouts and timeouts[0]["rule"] == "p" and timeouts[0]["condition"] == "body"


def test_a_long_keyword_list_matches_like_a_short_one(tmp_path):
    """5,000 keywords compile to one matcher (its cost curve is in bench/scan_bench.py)."""
    import random
    import string
    rng = random.Random(7)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 12))) for _ in range(5000)]
    ruleset = rules(tmp_path, f"policies:\n  - name: p\n    when: {{body: {{keywords: {words!r}}}}}\n"
                              "    actions: [delete]\n")
    assert ruleset.evaluate(inbound(), message(body=f"plain text with {words[4321]} inside")).action == "delete"
    assert ruleset.evaluate(inbound(), message(body="plain text only")).action == "deliver"
