"""Data identifiers: what a piece of sensitive data looks like, how it is validated and how it is masked.

Three kinds (SPEC §4b): expressions (a candidate pattern plus a validator:
a checksum, a number plan, a calendar), keyword lists, and file
attributes. PREDEFINED_IDENTIFIERS are the built-in ones, those that need
code (validators, maskers); keyword lists and other pure data are shipped
as pattern files (patterns/dlp/, see patterns.py) and rule files add
more. Masking lives here too, because only the identifier knows which
characters of its value are safe to show.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

from . import validators as v

# A validator returns the normalised value, several values (one card run
# holding two numbers), or None to reject the candidate.
Validator = Callable[[str], "str | list[str] | None"]


def mask_middle(value: str, head: int, tail: int) -> str:
    """Keep `head` leading and `tail` trailing characters; every other letter or digit becomes '*'."""
    if len(value) <= head + tail:
        return "*" * len(value)
    middle = "".join("*" if char.isalnum() else char for char in value[head: len(value) - tail])
    return value[:head] + middle + value[len(value) - tail:]


def mask_generic(value: str) -> str:
    """For values whose shape we do not know (admin expressions): show at most a quarter of it."""
    if len(value) <= 4:
        return "*" * len(value)
    if len(value) < 12:
        return mask_middle(value, 1, 0)
    return mask_middle(value, 2, 2)


def mask_email(value: str) -> str:
    local, _, domain = value.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_ipv6(value: str) -> str:
    return value.split(":", 1)[0] + ":****"


def mask_ipv4(value: str) -> str:
    octets = value.split(".")
    return f"{octets[0]}.*.*.{octets[-1]}"


def mask_ssn(value: str) -> str:
    return f"***-**-{value[-4:]}"


def mask_phone(value: str) -> str:
    return mask_middle(value, 1 if value.startswith("+") else 0, 2)


def mask_date(value: str) -> str:
    return mask_middle(value, 2, 0)


def keep(value: str) -> str:
    """For values that are not secret themselves (a PEM header names a key, it is not the key)."""
    return value


@dataclass(frozen=True)
class ExpressionIdentifier:
    """A pattern for candidates and a validator that accepts or rejects each one."""

    name: str
    pattern: str                        # regex (the `regex` module) without capture groups of its own
    validate: Validator | None = None   # None: every candidate counts, as matched
    mask: Callable[[str], str] = mask_generic
    case_sensitive: bool = True
    context: tuple[str, ...] = ()       # a keyword of these must be within context_window characters
    context_window: int = 0
    description: str = ""
    kind: str = "expression"

    def values(self, candidate: str) -> list[str]:
        """The normalised values a candidate holds ([] when rejected)."""
        if self.validate is None:
            return [candidate]
        found = self.validate(candidate)
        if found is None:
            return []
        return found if isinstance(found, list) else [found]


@dataclass(frozen=True)
class KeywordIdentifier:
    name: str
    items: tuple[str, ...]
    case_sensitive: bool = False
    description: str = ""
    kind: str = "keywords"


@dataclass(frozen=True)
class FileIdentifier:
    """A file (attachment or archive member) whose true type, name and size all fit."""

    name: str
    categories: tuple[str, ...] = ()    # true-type categories
    mime_globs: tuple[str, ...] = ()    # libmagic MIME types, globs
    name_globs: tuple[str, ...] = ()    # lower-case globs over every candidate name
    size: Callable[[int], bool] | None = None
    size_text: str = ""
    description: str = ""
    kind: str = "file"

    def matches(self, part) -> bool:
        if (self.categories or self.mime_globs) and not (
                part.true_type in self.categories
                or any(fnmatch.fnmatchcase(part.mime.lower(), glob) for glob in self.mime_globs)):
            return False
        if self.name_globs and not any(fnmatch.fnmatchcase(name.lower().replace("\\", "/").rsplit("/", 1)[-1], glob)
                                       for name in part.names for glob in self.name_globs):
            return False
        return self.size is None or self.size(part.size)


@dataclass(frozen=True)
class UnreadableIdentifier:
    """Documents whose text could not be extracted (encrypted, corrupt, over the budget)."""

    name: str = "unreadable-document"
    description: str = "a document whose text could not be read"
    kind: str = "unreadable"


Identifier = ExpressionIdentifier | KeywordIdentifier | FileIdentifier | UnreadableIdentifier

# Digits joined by single spaces/dashes, not touching other word characters:
# a card number inside a longer number or a word is no card number.
_CARD = r"(?<![\w])(?<!\d[ .,-])\d(?:[ -]?\d){12,}(?![ -]?\d)(?![.,]\d)(?!\w)"
# unspaced, or in groups of four (the printed form); partial groups would let an IBAN swallow a NINO
_IBAN = r"(?<![\w])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7} [A-Z0-9]{1,4})(?!\w)"
_SSN = r"(?<![\w-])(?<!\d )(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?![\w-])(?! \d)"
_NINO = r"(?<![\w])[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)"
_EMAIL = r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])"
_PHONE = (r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"
          r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![ .-]?\d)(?!\w)")
_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?!\w)"
_IPV6 = r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DATE = (r"(?<![\w./-])(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4}"
         rf"|(?i:\d{{1,2}} {_MONTH},? \d{{4}}|{_MONTH} \d{{1,2}},? \d{{4}}))(?![\w])")
_PRIVATE_KEY = r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
_AWS_KEY = r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
_GITHUB_TOKEN = r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"
_MRN = r"(?i:\b(?:MRN|medical record (?:number|no\.?|#))[ :#]*\d{6,10}\b)"

DOB_CONTEXT = ("date of birth", "birth date", "birthdate", "dob", "d.o.b", "born", "birthday",
               "geburtsdatum", "date de naissance", "fecha de nacimiento", "data di nascita")
DOB_CONTEXT_WINDOW = 40

PREDEFINED_IDENTIFIERS: dict[str, Identifier] = {ident.name: ident for ident in (
    ExpressionIdentifier("credit-card", _CARD, v.card_numbers, lambda s: mask_middle(s, 4, 4),
                         description="payment card number: brand prefix and length, Luhn"),
    ExpressionIdentifier("iban", _IBAN, v.iban, lambda s: mask_middle(s, 4, 4),
                         description="IBAN: country length and mod-97 (upper case, optionally in groups of 4)"),
    ExpressionIdentifier("us-ssn", _SSN, v.us_ssn, mask_ssn,
                         description="US SSN written AAA-GG-SSSS or AAA GG SSSS, SSA area/group/serial rules"),
    ExpressionIdentifier("uk-nino", _NINO, v.uk_nino, lambda s: mask_middle(s, 2, 1),
                         description="UK National Insurance number: HMRC prefixes, suffix A-D"),
    ExpressionIdentifier("email", _EMAIL, v.email, mask_email, description="email address"),
    ExpressionIdentifier("phone", _PHONE, v.phone, mask_phone,
                         description="phone number: +CC international (8-15 digits) or North American"),
    ExpressionIdentifier("ipv4", _IPV4, v.ipv4, mask_ipv4, description="IPv4 address"),
    ExpressionIdentifier("ipv6", _IPV6, v.ipv6, mask_ipv6, description="IPv6 address"),
    ExpressionIdentifier("date-of-birth", _DATE, v.date_of_birth, mask_date, context=DOB_CONTEXT,
                         context_window=DOB_CONTEXT_WINDOW,
                         description=f"a real past date within {DOB_CONTEXT_WINDOW} characters of "
                                     f"'date of birth', 'DOB', 'born'..."),
    ExpressionIdentifier("private-key", _PRIVATE_KEY, None, keep, description="PEM private key header"),
    ExpressionIdentifier("aws-access-key", _AWS_KEY, v.aws_access_key, lambda s: mask_middle(s, 4, 4),
                         description="AWS access key id (AKIA/ASIA + 16)"),
    ExpressionIdentifier("github-token", _GITHUB_TOKEN, None, lambda s: mask_middle(s, 4, 4),
                         description="GitHub token (ghp_, gho_, ghu_, ghs_, ghr_)"),
    ExpressionIdentifier("medical-record-number", _MRN, None, mask_generic,
                         description="'MRN' or 'medical record number' followed by 6-10 digits"),
    UnreadableIdentifier(),
)}


@dataclass(frozen=True)
class Match:
    """One accepted identifier value in one text. `value` is the full value: it never leaves the engine."""

    identifier: str
    start: int
    end: int
    value: str = field(repr=False)
    masked: str = ""
