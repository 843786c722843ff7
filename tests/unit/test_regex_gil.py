"""Searches of a message's texts with the regex module keep the GIL unless the text is long.

The regex module lets the GIL go while it matches (and takes it back for
every allocation) unless a search says concurrent=False. In a milter worker
the other threads are connections waiting for the GIL, so for the short
texts of a message each release is a costly hand-off (bench/README.rst).
These tests pin which searches release it: spam rules, keyword/expression
conditions and DLP identifiers alike, with results and time limits as before.
"""

import regex

from imss_milter.engines.spam.rules import SpamRule
from imss_milter.textmatch import RELEASE_GIL_CHARS, TextMatcher, concurrent


class Recording:
    """A compiled regex-module pattern that records the `concurrent` argument of each search."""

    def __init__(self, pattern: str):
        self.compiled = regex.compile(pattern)
        self.pattern = self.compiled.pattern
        self.flags = self.compiled.flags
        self.asked = []

    def search(self, text, *args, **kwargs):
        self.asked.append(kwargs.get("concurrent"))
        return self.compiled.search(text, *args, **kwargs)

    def finditer(self, text, *args, **kwargs):
        self.asked.append(kwargs.get("concurrent"))
        return self.compiled.finditer(text, *args, **kwargs)


def test_only_long_texts_release_the_gil():
    assert concurrent("x" * 100) is False
    assert concurrent("x" * (RELEASE_GIL_CHARS - 1)) is False
    assert concurrent("x" * RELEASE_GIL_CHARS) is True


def test_spam_rule_search_holds_the_gil_on_message_texts_and_keeps_its_result():
    pattern = Recording(r"\bfree\s+money\b")
    rule = SpamRule("FREE_MONEY", "body", pattern, 2.0)
    assert rule.search("get free  money now", 1.0) is True
    assert rule.search("nothing here", 1.0) is False
    assert rule.search("free money " + "x" * RELEASE_GIL_CHARS, 1.0) is True
    assert pattern.asked == [False, False, True]


def test_spam_rule_that_runs_out_of_time_still_scores_nothing():
    rule = SpamRule("SLOW", "body", regex.compile(r"(a+)+$"), 1.0)
    assert rule.search("a" * 5000 + "!", 0.01) is None


def test_expression_conditions_hold_the_gil_on_short_texts():
    matcher = TextMatcher(expressions=[r"invoice\s+\d+", r"wire\s+transfer"], timeout=1.0)
    recorded = [Recording(compiled.pattern) for compiled in matcher._expression_res]
    if matcher._combined is not None:
        matcher._combined = Recording(matcher._combined.pattern)
        recorded = [matcher._combined]
    else:
        matcher._expression_res = recorded
    result = matcher.search("see invoice 42 and the wire  transfer")
    assert sorted(hit.text for hit in result.hits) == ["invoice 42", "wire  transfer"]
    asked = [flag for pattern in recorded for flag in pattern.asked]
    assert asked and set(asked) == {False}


def test_dlp_identifiers_hold_the_gil_on_short_texts():
    from imss_milter.engines.dlp.scanner import guided_finditer
    pattern = Recording(r"\d{4}-\d{4}")
    found = list(guided_finditer(pattern, "card 1234-5678 and 8765-4321", [14, 28], 9, 1.0))
    assert [m.group() for m in found] == ["1234-5678", "8765-4321"]
    assert pattern.asked and set(pattern.asked) == {False}
