"""Detection categories: what a signature name or a YARA `category` meta says a finding is.

Three top categories (virus, spyware, grayware); grayware has finer ones
(adware, dialer, hacking-tool, joke, password-cracking, remote-access). A
rule asking for `grayware` matches every grayware finding; a rule asking
for `adware` matches only adware. ClamAV-style names
(`[PUA.]Platform.Category.Name-Id-Rev`) are mapped by their words; see
docs/antivirus.rst for the table.
"""

from __future__ import annotations

import re

TOP_CATEGORIES = ("virus", "spyware", "grayware")
GRAYWARE_CATEGORIES = ("adware", "dialer", "hacking-tool", "joke", "password-cracking", "remote-access")
CATEGORIES = TOP_CATEGORIES + GRAYWARE_CATEGORIES

# A word of a signature name (case-insensitive) -> category. The first word that maps decides,
# read left to right: ClamAV names put the category word before the family name, so
# `Win.Trojan.Remote-1` is a trojan (virus) and `Win.Keylogger.Trojan-1` is spyware.
NAME_WORDS = {
    "trojan": "virus", "worm": "virus", "virus": "virus", "backdoor": "virus", "ransomware": "virus",
    "rootkit": "virus", "downloader": "virus", "dropper": "virus", "exploit": "virus",
    "malware": "virus", "coinminer": "virus", "ircbot": "virus", "loader": "virus",
    "spyware": "spyware", "spy": "spyware", "keylogger": "spyware", "stealer": "spyware",
    "infostealer": "spyware", "pws": "spyware",
    "adware": "adware", "adload": "adware",
    "dialer": "dialer",
    "joke": "joke", "hoax": "joke",
    "tool": "hacking-tool", "hacktool": "hacking-tool", "hacking": "hacking-tool",
    "exploitkit": "hacking-tool",
    "pwtool": "password-cracking", "passwordcracker": "password-cracking", "cracker": "password-cracking",
    "crack": "password-cracking", "keygen": "password-cracking", "pwcrack": "password-cracking",
    "rat": "remote-access", "remoteaccess": "remote-access", "remoteadmin": "remote-access",
    "remoteadmintool": "remote-access",
}
# ClamAV's PUA.* (potentially unwanted) names are grayware whatever else they say: a malware word
# there (PUA.Win.Trojan.X) does not make them a virus; no finer word leaves them plain grayware.
PUA_PREFIX = "pua"
_WORD_SPLIT = re.compile(r"[.\-_/:\s]+")


def group_of(category: str) -> str:
    """The top category a category belongs to (adware -> grayware)."""
    return "grayware" if category in GRAYWARE_CATEGORIES else category


def category_from_name(name: str) -> str:
    """The category of a ClamAV-style signature name; virus when nothing in it says otherwise.

    `PUA.Win.Adware.Foo-1` -> adware, `Win.Spyware.Bar-2` -> spyware, `PUA.Doc.Packed.X` ->
    grayware, `Win.Trojan.Agent-3` / `Eicar-Test-Signature` -> virus."""
    words = [word.lower() for word in _WORD_SPLIT.split(name) if word]
    unwanted = bool(words) and words[0] == PUA_PREFIX
    for word in words:
        category = NAME_WORDS.get(word)
        if category is not None and not (unwanted and category == "virus"):
            return category
    return "grayware" if unwanted else "virus"


def normalise_category(value: str) -> str | None:
    """A category as written in YARA meta or a rule (`Hacking Tool`, `hacking_tool`), or None if unknown."""
    text = re.sub(r"[\s_]+", "-", value.strip().lower())
    return text if text in CATEGORIES else None


def matches(requested: tuple, category: str) -> bool:
    """True when a finding of `category` answers a condition asking for `requested` (() = any)."""
    if not requested:
        return True
    return category in requested or group_of(category) in requested
