"""Checks that turn a regex candidate into a data identifier match: checksums, number plans, calendars.

Each validator takes the matched text and returns the normalised value
(what is counted and masked) or None when the candidate must be rejected.
They are pure functions so every rule (Luhn, mod-97, SSN areas) is tested
on its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import re

_NOT_DIGIT = re.compile(r"\D")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def digits_of(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


def luhn_ok(number: str) -> bool:
    """The Luhn (mod 10) checksum that every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(number)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# (brand, prefix ranges as (low, high) over the first len(low) digits, allowed lengths)
CARD_BRANDS: tuple[tuple[str, tuple[tuple[str, str], ...], frozenset[int]], ...] = (
    ("amex", (("34", "34"), ("37", "37")), frozenset({15})),
    ("visa", (("4", "4"),), frozenset({13, 16, 19})),
    ("mastercard", (("51", "55"), ("2221", "2720")), frozenset({16})),
    ("discover", (("6011", "6011"), ("644", "649"), ("65", "65"), ("622126", "622925")),
     frozenset({16, 17, 18, 19})),
    ("unionpay", (("62", "62"), ("81", "81")), frozenset({16, 17, 18, 19})),
    ("jcb", (("3528", "3589"),), frozenset({16, 17, 18, 19})),
    ("diners", (("300", "305"), ("36", "36"), ("38", "39")), frozenset({14, 15, 16, 17, 18, 19})),
    ("maestro", (("5018", "5018"), ("5020", "5020"), ("5038", "5038"), ("5893", "5893"), ("6304", "6304"),
                 ("6759", "6759"), ("6761", "6763")), frozenset({13, 14, 15, 16, 17, 18, 19})),
)


def card_brand(number: str) -> str | None:
    """The brand whose prefix and length fit a digit string, or None."""
    for brand, ranges, lengths in CARD_BRANDS:
        if len(number) not in lengths:
            continue
        for low, high in ranges:
            if low <= number[: len(low)] <= high:
                return brand
    return None


def card_numbers(candidate: str) -> list[str]:
    """The card numbers in a run of digits joined by single spaces or dashes.

    A run of 13-19 digits is one candidate. A longer run is accepted only
    when its groups split, in order, into valid card numbers with nothing
    left over ("4111 1111 1111 1111 5555 5555 5555 4444" on one line);
    otherwise the digits belong to some longer number and none is a card
    ("1234 4111 1111 1111 1111").
    """
    digits = digits_of(candidate)
    if 13 <= len(digits) <= 19:
        return [digits] if card_brand(digits) and luhn_ok(digits) else []
    found, current = [], ""
    for group in re.split(r"[ -]", candidate):
        current += group
        if 13 <= len(current) <= 19 and card_brand(current) and luhn_ok(current):
            found.append(current)
            current = ""
        elif len(current) > 19:
            return []
    return found if not current else []


# ISO 13616 lengths of the IBAN of each country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def mod97_ok(compact: str) -> bool:
    """ISO 7064 mod 97-10 as IBANs use it: move the first four characters last, letters as 10..35."""
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


def iban(candidate: str) -> str | None:
    """The IBAN at the start of candidate, ending on a group boundary, with its country's length and mod-97."""
    groups = candidate.split(" ")
    country = groups[0][:2].upper()
    length = IBAN_LENGTHS.get(country)
    if length is None:
        return None
    compact = ""
    for group in groups:
        compact += group.upper()
        if len(compact) == length:
            return compact if mod97_ok(compact) else None
        if len(compact) > length:
            return None
    return None


# Numbers the SSA never issues or that were published (the Woolworth wallet card, an advert sample).
_SSN_PUBLISHED = {"078051120", "219099999", "123456789"}


def us_ssn(candidate: str) -> str | None:
    """AAA-GG-SSSS with the SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    number = digits_of(candidate)
    if len(number) != 9 or number in _SSN_PUBLISHED:
        return None
    area, group, serial = number[:3], number[3:5], number[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return number


_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def uk_nino(candidate: str) -> str | None:
    """Two prefix letters (HMRC's allowed set, not BG/GB/KN/NK/NT/TN/ZZ), six digits, suffix A-D."""
    compact = _NOT_ALNUM.sub("", candidate).upper()
    if len(compact) != 9 or compact[:2] in _NINO_BAD_PREFIXES:
        return None
    first, second = compact[0], compact[1]
    if first in "DFIQUV" or second in "DFIOQUV":
        return None
    if not compact[2:8].isdigit() or compact[8] not in "ABCD":
        return None
    return compact


def email(candidate: str) -> str | None:
    local, _, domain = candidate.rpartition("@")
    if not local or len(local) > 64 or len(candidate) > 254:
        return None
    if local.startswith(".") or local.endswith(".") or ".." in local or ".." in domain:
        return None
    labels = domain.split(".")
    if any(not label or len(label) > 63 or label.startswith("-") or label.endswith("-") for label in labels):
        return None
    return candidate


def phone(candidate: str) -> str | None:
    """International (+CC, 8-15 digits, E.164) or North American (NXX NXX XXXX) numbers."""
    number = digits_of(candidate)
    if candidate.lstrip().startswith("+"):
        if not 8 <= len(number) <= 15 or number[0] == "0":
            return None
        return "+" + number
    if len(number) != 10 or number[0] in "01" or number[3] in "01":
        return None
    if len(set(number)) < 3:        # 555-555-5555 style fillers
        return None
    return number


def ipv4(candidate: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(candidate))
    except ValueError:
        return None


def ipv6(candidate: str) -> str | None:
    if candidate.count(":") < 2:
        return None
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    if address.is_unspecified:
        return None
    return str(address)


MONTHS = {name: index for index, names in enumerate((
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
    ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"),
    ("nov", "november"), ("dec", "december")), start=1) for name in names}


def date_of_birth(candidate: str, today: datetime.date | None = None) -> str | None:
    """A real calendar date between 1900 and today, in ISO, D/M/Y, M/D/Y or month-name forms.

    Day/month order is ambiguous (03/04/1985); the date counts when either
    reading is a real date. Returns the ISO date of the first reading that is.
    """
    today = today or datetime.date.today()
    text = candidate.strip().lower().replace(",", " ")
    tokens = [t for t in re.split(r"[\s./-]+", text) if t]
    if len(tokens) != 3:
        return None
    readings = []
    if all(t.isdigit() for t in tokens):
        first, second, third = (int(t) for t in tokens)
        if len(tokens[0]) == 4:
            readings.append((first, second, third))
        elif len(tokens[2]) == 4:
            readings += [(third, second, first), (third, first, second)]
    else:
        months = [MONTHS.get(t) for t in tokens]
        numbers = [int(t) if t.isdigit() else None for t in tokens]
        if months[1] and numbers[0] is not None and numbers[2] is not None:
            readings.append((numbers[2], months[1], numbers[0]))          # 14 March 1985
        elif months[0] and numbers[1] is not None and numbers[2] is not None:
            readings.append((numbers[2], months[0], numbers[1]))          # March 14 1985
    for year, month, day in readings:
        if not 1900 <= year <= today.year:
            continue
        try:
            found = datetime.date(year, month, day)
        except ValueError:
            continue
        if found <= today:
            return found.isoformat()
    return None


def aws_access_key(candidate: str) -> str | None:
    return candidate if candidate[:4] in ("AKIA", "ASIA") and len(candidate) == 20 else None


def luhn_digits(candidate: str) -> str | None:
    """For admin expressions: the digits, when they pass Luhn."""
    number = digits_of(candidate)
    return number if number and luhn_ok(number) else None


def mod97_text(candidate: str) -> str | None:
    """For admin expressions: the compacted text, when it passes the IBAN mod-97 check."""
    compact = _NOT_ALNUM.sub("", candidate).upper()
    return compact if len(compact) > 4 and mod97_ok(compact) else None


# Validators an expression in a rule or pattern file may name (`validator: luhn`): the checks
# behind the built-in identifiers, so data files can define variants without new code.
ADMIN_VALIDATORS = {
    "luhn": luhn_digits, "mod97": mod97_text,
    "card-number": card_numbers, "iban": iban, "us-ssn": us_ssn, "uk-nino": uk_nino, "email": email,
    "phone": phone, "ipv4": ipv4, "ipv6": ipv6, "past-date": date_of_birth, "aws-access-key": aws_access_key,
}
