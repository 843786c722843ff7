"""URLs are found from their anchors ("://", "www") exactly as the patterns' own finditer finds them."""

from __future__ import annotations

import random

import pytest

from imss_milter.engines.spam import builtin
from imss_milter.engines.url import extract
from imss_milter.textmatch import anchored_finditer, url_starts

FRAGMENTS = [
    "http://a.example/x", "https://b.example", "HTTPS://C.EXAMPLE/P?q=1", "ftp://f.example", "Ftp://g",
    "www.example.com", "WWW.EXAMPLE.ORG/path", "www2.example", "wwww.example", "xwww.example", "@www.x",
    "://", "p://", "tp://", "ttp://", "xhttp://x", "éhttp://x", "_http://x", "httpſ://x", "hTtPſ://y",
    "http://a/?u=http://b/", "(http://paren.example)", "<https://angle.example>", "\"http://q.example\"",
    "www.", "www", "ww", "w", ".www.x", "/www.x", "-www.x", "http:/", "http//x", "İ", "\u212a", "ſ", "\u00a0",
    "http://\u00e9xample.test/\u00fc", "ftp://", "https://", "\n", " ", ".", ",", "a", "7",
]


def random_text(seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(FRAGMENTS) + rng.choice(["", " ", "", "x", ".", "\n"]) for _ in range(rng.randint(1, 60)))


@pytest.mark.parametrize("seed", range(300))
def test_anchored_search_finds_what_finditer_finds(seed):
    text = random_text(seed)
    for pattern, www in ((builtin._URL, False), (extract._TEXT_URL, True)):
        expected = [match.span() for match in pattern.finditer(text)]
        assert [match.span() for match in anchored_finditer(pattern, text, url_starts(text, www))] == expected


def test_overlapping_anchors_are_all_tried():
    # the second "www" starts inside the first run of w's: only a start after a non-word character matches
    text = "wwwww.example www.real.example"
    assert url_starts(text, www=True)[:3] == [0, 1, 2]
    assert [m.group() for m in anchored_finditer(extract._TEXT_URL, text, url_starts(text, True))] == \
        ["www.real.example"]


def test_a_url_inside_a_url_is_part_of_it():
    text = "see http://a.example/?next=http://b.example/ now"
    found = [m.group() for m in anchored_finditer(builtin._URL, text, url_starts(text))]
    assert found == ["http://a.example/?next=http://b.example/"]
    assert extract.urls_in_text(text) == found
