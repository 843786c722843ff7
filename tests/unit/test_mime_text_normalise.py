"""normalise_whitespace: the text keyword conditions see, ASCII or not."""

from imss_milter.mime import normalise_whitespace


def test_ascii_whitespace_runs_become_one_space():
    assert normalise_whitespace("  a\t\tb\r\n c\x0b\x0cd\x1c e  ") == "a b c d e"


def test_invisible_and_no_break_characters_do_not_split_or_hide_words():
    assert normalise_whitespace("fr\u200bee\u00a0mo\u00adney \u2060now\ufeff") == "free money now"
    assert normalise_whitespace("caf\u00e9\u2003 au\u3000lait") == "caf\u00e9 au lait"


def test_empty_and_blank():
    assert normalise_whitespace("") == ""
    assert normalise_whitespace(" \n\u00a0\u200b") == ""
