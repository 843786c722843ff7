"""The shared keyword/expression matcher: trie alternation, boundaries, expressions, time limits, distance."""

import time

import pytest

from imss_milter.textmatch import Hit, PatternError, TextMatcher, any_two_within


def found(matcher, text):
    return [(matcher.item_label(h.item), h.text) for h in matcher.search(text).hits]


def test_shared_prefixes_all_found_longest_first():
    matcher = TextMatcher(["card", "cards", "card number", "car", "cart"])
    assert found(matcher, "car cart card cards card   number") == [
        ("car", "car"), ("cart", "cart"), ("card", "card"), ("cards", "cards"), ("card number", "card number")]


def test_word_boundaries_only_where_the_keyword_has_word_edges():
    matcher = TextMatcher(["cat", "c#", "$$$", ".net"])
    assert found(matcher, "concatenate cats cat") == [("cat", "cat")]
    assert found(matcher, "I write c# and asp.net for $$$!") == [("c#", "c#"), (".net", ".net"), ("$$$", "$$$")]


def test_case_handling():
    assert found(TextMatcher(["Secret"]), "SECRET secret") == [("Secret", "secret"), ("Secret", "secret")]
    assert found(TextMatcher(["Secret"], case_sensitive=True), "SECRET Secret") == [("Secret", "Secret")]
    assert found(TextMatcher([], ["ab\\d"], case_sensitive=True), "AB1 ab2") == [("ab\\d", "ab2")]
    assert found(TextMatcher([], ["ab\\d"]), "AB1") == [("ab\\d", "AB1")]


def test_keyword_spaces_match_any_white_space():
    matcher = TextMatcher(["internal use only"])
    assert found(matcher, "for internal\n  use\tonly!") == [("internal use only", "internal use only")]


def test_unicode_keywords():
    assert found(TextMatcher(["vertraulich", "秘密"]), "Streng VERTRAULICH: 秘密です") == [
        ("vertraulich", "vertraulich"), ("秘密", "秘密")]


def test_expressions_combined_and_separate_give_item_numbers():
    combined = TextMatcher(["kw"], ["PRJ-\\d{3}", "(?P<year>20\\d\\d)"])
    assert found(combined, "kw PRJ-123 in 2024") == [("kw", "kw"), ("PRJ-\\d{3}", "PRJ-123"),
                                                      ("(?P<year>20\\d\\d)", "2024")]
    backrefs = TextMatcher([], ["(\\w)\\1", "x+"])          # a backreference forces separate passes
    assert sorted(found(backrefs, "aa xx")) == [("(\\w)\\1", "aa"), ("(\\w)\\1", "xx"), ("x+", "xx")]


def test_empty_matches_are_ignored():
    assert found(TextMatcher([], ["x*"]), "abc") == []


def test_bad_expression_names_its_index():
    with pytest.raises(PatternError) as info:
        TextMatcher([], ["ok", "(bad"])
    assert info.value.index == 1


def test_timeout_bounds_a_catastrophic_expression():
    matcher = TextMatcher([], ["(x+x+)+y"], timeout=0.05)
    started = time.monotonic()
    result = matcher.search("x" * 10_000)
    assert result.timed_out and result.hits == []
    assert time.monotonic() - started < 1.0


def test_match_limit():
    assert len(TextMatcher(["a"]).search("a " * 100, limit=7).hits) == 7


def test_any_two_within():
    def hit(item, start, end):
        return Hit(item, start, end, "")
    assert any_two_within([hit(0, 0, 3), hit(1, 10, 12)], 7) == (hit(0, 0, 3), hit(1, 10, 12))
    assert any_two_within([hit(0, 0, 3), hit(1, 10, 12)], 6) is None
    assert any_two_within([hit(0, 0, 3), hit(0, 5, 8)], 100) is None
    # a same-item hit in between must not hide an earlier different item
    assert any_two_within([hit(1, 0, 2), hit(0, 3, 5), hit(0, 6, 8)], 1) == (hit(1, 0, 2), hit(0, 3, 5))
    assert any_two_within([hit(0, 0, 2), hit(0, 30, 32), hit(1, 34, 36)], 2) == (hit(0, 30, 32), hit(1, 34, 36))
