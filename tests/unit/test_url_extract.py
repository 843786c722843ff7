"""URL extraction from text and HTML parts: every way mail writes or hides a link."""

from imss_milter.engines.url.extract import MAX_FOUND, extract_urls, mismatched_links, urls_in_html, urls_in_text
from imss_milter.engines.url.normalise import normalise_url
from imss_milter.mime import parse_message


def message(body: bytes, content_type=b"text/html; charset=utf-8", encoding=b"7bit") -> bytes:
    return (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: " + content_type + b"\r\nContent-Transfer-Encoding: " + encoding + b"\r\n\r\n"
            + body + b"\r\n")


def hosts(body: bytes, **kwargs) -> list[str]:
    return [found.normal.host for found in extract_urls(parse_message(message(body, **kwargs)))]


def test_quoted_and_unquoted_hrefs():
    markup = """<a href="http://double.test/">a</a> <a href='http://single.test/'>b</a>
                <a href=http://bare.test/x?y=1>c</a> <A HREF = "http://upper.test/">d</A>
                <img src="http://img.test/p.gif"> <form action="http://form.test/post">"""
    assert [url for url, _ in urls_in_html(markup)] == [
        "http://double.test/", "http://single.test/", "http://bare.test/x?y=1", "http://upper.test/",
        "http://img.test/p.gif", "http://form.test/post"]


def test_entities_in_attributes_and_text():
    assert hosts(b'<a href="http://evil&#x2e;test/">x</a>') == ["evil.test"]
    assert hosts(b'<a href="http&#58;//evil&#46;test/">x</a>') == ["evil.test"]
    assert hosts(b"<p>http://evil&period;test/path</p>") == ["evil.test"]


def test_whitespace_and_newlines_inside_attribute_values():
    assert hosts(b'<a href="\r\n  http://ev\r\nil.test/\r\n">x</a>') == ["evil.test"]
    assert hosts(b'<a\r\nhref=\r\n"http://split.test/">x</a>') == ["split.test"]


def test_userinfo_trick_in_a_link():
    [found] = extract_urls(parse_message(message(b'<a href="http://paypal.com@evil.test/">x</a>')))
    assert found.normal.host == "evil.test"
    assert found.text == "http://paypal.com@evil.test/"


def test_bare_urls_in_html_text_and_www_without_scheme():
    body = b"<p>Go to http://bare.test/a, or www.noscheme.test/login.</p>"
    assert hosts(body) == ["bare.test", "www.noscheme.test"]


def test_plain_text_urls_and_trailing_punctuation():
    text = "See (http://paren.test/a_(b)) and http://comma.test/q?a=1, then www.www.test. Done"
    assert urls_in_text(text) == ["http://paren.test/a_(b)", "http://comma.test/q?a=1", "www.www.test"]
    assert urls_in_text("mail me: someone@www.example.test") == []


def test_quoted_printable_was_decoded_by_the_mime_model():
    body = b"Click http://evil=\r\n.test/pa=3Dth and <a href=3D\"http://qp.test/\">x</a>"
    # a link written in plain text is still a URL a reader may copy
    assert set(hosts(body, content_type=b"text/plain", encoding=b"quoted-printable")) == {"evil.test", "qp.test"}
    assert hosts(body, encoding=b"quoted-printable") == ["qp.test", "evil.test"]


def test_link_text_showing_another_domain_is_a_mismatch():
    markup = ('<a href="http://evil.test/login">https://www.paypal.com/signin</a>'
              '<a href="http://www.paypal.com/x">www.paypal.com</a>'           # same site: fine
              '<a href="http://click.news.test/r?1">Read more</a>'             # words, not a site: fine
              '<a href="http://evil2.test/"><b>paypal.com</b></a>')
    mismatches = mismatched_links(markup)
    assert [(href, shown.host) for href, shown in mismatches] == [
        ("http://evil.test/login", "www.paypal.com"), ("http://evil2.test/", "paypal.com")]
    found = extract_urls(parse_message(message(markup.encode())))
    assert {f.normal.host: f.shown_host for f in found if f.shown_host} == {
        "evil.test": "www.paypal.com", "evil2.test": "paypal.com"}


def test_text_attachments_are_read_and_binary_ones_are_not():
    raw = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--B\r\nContent-Type: text/html; name=page.html\r\nContent-Disposition: attachment; filename=page.html\r\n\r\n"
           b"<a href='http://attached.test/'>x</a>\r\n"
           b"--B\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\n"
           b"\x00\x01MZ http://inbinary.test/ \x00\x02\r\n--B--\r\n")
    found = extract_urls(parse_message(raw))
    assert [(f.normal.host, list(f.part)) for f in found] == [("attached.test", ["page.html"])]


def test_relative_mailto_and_cid_links_are_ignored():
    assert hosts(b'<a href="/x">a</a><a href="mailto:a@b.test">b</a><img src="cid:1"><a href="#top">c</a>') == []


def test_hostile_input_is_bounded_and_never_raises():
    unterminated = "<a href=" * 50000
    values = urls_in_html(unterminated)
    assert len(values) <= MAX_FOUND and not any(normalise_url(url) for url, _ in values)
    assert mismatched_links(unterminated + "</a>") == []
    assert urls_in_html('<a href="http://one.test/ <a href=\'http://two.test/') == [
        ("http://one.test/ <a href='http://two.test/", "href")]     # as a browser reads it: one link to one.test
    long_host = "http://" + "a." * 100000 + "test/"
    assert [normalise_url(url) for url in urls_in_text(long_host)] == [None]
    assert isinstance(hosts(b"\xff\xfe<a href='http://\xc3\x28.test/'>x</a>"), list)
