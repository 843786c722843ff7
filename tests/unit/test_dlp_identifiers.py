"""DLP identifiers: each one with valid values and near misses (checksum, length, embedding), and masking."""

from __future__ import annotations

import datetime

import pytest

from imss_milter.engines.dlp import predefined_config
from imss_milter.engines.dlp import validators as v
from imss_milter.engines.dlp.identifiers import mask_middle


def found(identifier: str, text: str) -> list[str]:
    """Full values the predefined scanner accepts for one identifier in text."""
    return [m.value for m in predefined_config().scanner.scan(text).matches.get(identifier, [])]


def masked(identifier: str, text: str) -> list[str]:
    return [m.masked for m in predefined_config().scanner.scan(text).matches.get(identifier, [])]


# ---------------------------------------------------------------- credit cards

@pytest.mark.parametrize("number,brand", [
    ("4111111111111111", "visa"), ("4012888888881881", "visa"), ("4222222222222", "visa"),
    ("5555555555554444", "mastercard"), ("2221000000000009", "mastercard"),
    ("378282246310005", "amex"), ("371449635398431", "amex"),
    ("6011111111111117", "discover"), ("3530111333300000", "jcb"),
    ("30569309025904", "diners"), ("6200000000000005", "unionpay"),
])
def test_card_brands_with_valid_luhn(number, brand):
    assert v.luhn_ok(number)
    assert v.card_brand(number) == brand
    assert found("credit-card", f"pay with {number} today") == [number]


@pytest.mark.parametrize("written", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111 1111-1111 1111", "3782 822463 10005",
])
def test_cards_tolerate_spaces_and_dashes(written):
    assert len(found("credit-card", f"Card: {written}.")) == 1


@pytest.mark.parametrize("text", [
    "4111111111111112",                 # wrong Luhn digit
    "4111 1111 1111 1121",              # transposed digits
    "411111111111111",                  # Visa with 15 digits
    "5555555555554445",
    "1234567812345670",                 # Luhn-valid, but no brand starts with 1
    "0000000000000000",                 # Luhn-valid zeros
    "37828224631000",                   # Amex one digit short
])
def test_card_near_misses_are_rejected(text):
    assert found("credit-card", f"number {text} here") == []


@pytest.mark.parametrize("text", [
    "ref 94111111111111111 end",            # a valid card inside a longer number
    "ref 1234 4111 1111 1111 1111 end",     # grouped card inside a longer grouped number
    "order 4111111111111111999 end",
    "id X4111111111111111 end",             # glued to a word
    "v 4111111111111111.25 end",            # decimal
])
def test_digits_embedded_in_longer_numbers_are_not_cards(text):
    assert found("credit-card", text) == []


def test_cards_written_one_after_another_on_a_line_are_separate_cards():
    assert found("credit-card", "4111111111111111 5555555555554444") == ["4111111111111111", "5555555555554444"]
    assert found("credit-card", "4111 1111 1111 1111 5555-5555-5555-4444") == ["4111111111111111",
                                                                               "5555555555554444"]
    assert found("credit-card", "4111 1111 1111 1111 2222") == []       # digits left over: a longer number


def test_card_masking_keeps_first_and_last_four():
    assert masked("credit-card", "4111 1111 1111 1111") == ["4111********1111"]
    assert mask_middle("378282246310005", 4, 4) == "3782*******0005"


# ---------------------------------------------------------------- IBAN

@pytest.mark.parametrize("text,value", [
    ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
    ("GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("FR14 2004 1010 0505 0001 3M02 606", "FR1420041010050500013M02606"),
    ("NO9386011117947", "NO9386011117947"),
])
def test_valid_ibans(text, value):
    assert found("iban", f"Account {text}, thanks") == [value]


@pytest.mark.parametrize("text", [
    "DE89 3704 0044 0532 0130 01",      # mod-97 fails
    "DE89 3704 0044 0532 0130",         # too short for DE
    "DE89 3704 0044 0532 0130 0000",    # too long for DE
    "XX89370400440532013000",           # no such country
    "GB82WEST12345698765432X",          # glued to more text
])
def test_iban_near_misses(text):
    assert found("iban", f"Account {text} thanks") == []


def test_iban_followed_by_a_word_ends_at_its_last_group():
    assert found("iban", "IBAN DE89 3704 0044 0532 0130 00 BANK") == ["DE89370400440532013000"]
    assert found("iban", "IBAN DE89 3704 0044 0532 0130 00, BANK") == ["DE89370400440532013000"]
    assert found("iban", "IBAN DE89 3704 0044 0532 0130 0012 BANK") == []


def test_mod97():
    assert v.mod97_ok("GB82WEST12345698765432")
    assert not v.mod97_ok("GB83WEST12345698765432")


# ---------------------------------------------------------------- US SSN and UK NINO

@pytest.mark.parametrize("text", ["536-22-1234", "536 22 1234", "001-01-0001"])
def test_valid_ssns(text):
    assert found("us-ssn", f"SSN {text}.") == [text.replace("-", "").replace(" ", "")]


@pytest.mark.parametrize("text", [
    "000-12-3456", "666-12-3456", "912-12-3456",   # area never issued
    "536-00-1234", "536-22-0000",                   # group / serial zero
    "078-05-1120",                                  # the published Woolworth number
    "536-22-12345", "1536-22-1234",                 # longer numbers
    "536-22 1234",                                  # mixed separators
    "536221234",                                    # unformatted: too noisy to count
])
def test_ssn_near_misses(text):
    assert found("us-ssn", f"SSN {text} x") == []


def test_ssn_masking():
    assert masked("us-ssn", "ssn 536-22-1234") == ["***-**-1234"]


@pytest.mark.parametrize("text", ["AB123456C", "AB 12 34 56 C", "JG103759A"])
def test_valid_ninos(text):
    assert found("uk-nino", f"NI number {text}.") == [text.replace(" ", "")]


@pytest.mark.parametrize("text", ["GB123456C", "BG123456A", "DA123456C", "AO123456C", "AB123456E", "AB12345C",
                                  "AB1234567C"])
def test_nino_near_misses(text):
    assert found("uk-nino", f"NI number {text}.") == []


# ---------------------------------------------------------------- contact data and addresses

def test_email_addresses():
    assert found("email", "write to john.doe+tag@mail.example.co.uk, or x@y") == ["john.doe+tag@mail.example.co.uk"]
    assert found("email", "bad .john@example.com and john..doe@example.com") == []
    assert masked("email", "john.doe@example.com") == ["j***@example.com"]


@pytest.mark.parametrize("text", ["+44 20 7946 0958", "+1-212-555-0199", "(212) 555-0199", "212-555-0199",
                                  "+33 (1) 42 68 53 00"])
def test_phone_numbers(text):
    assert len(found("phone", f"call {text} now")) == 1


@pytest.mark.parametrize("text", ["+12 34", "012-555-0199", "212-155-0199", "555-555-5555", "2125550199123",
                                  "1.212.555.0199.7"])
def test_phone_near_misses(text):
    assert found("phone", f"call {text} now") == []


def test_ip_addresses():
    assert found("ipv4", "from 192.0.2.10, then 10.0.0.1.") == ["192.0.2.10", "10.0.0.1"]
    assert found("ipv4", "bad 256.1.1.1 and 1.2.3.4.5 and 01.2.3.4") == []
    assert found("ipv6", "peer 2001:db8::7 and fe80::1") == ["2001:db8::7", "fe80::1"]
    assert found("ipv6", "at 12:30:45 or std::map or 1::2::3") == []
    assert masked("ipv4", "192.0.2.10") == ["192.*.*.10"]


# ---------------------------------------------------------------- dates of birth

@pytest.mark.parametrize("text", ["Date of birth: 1985-03-14", "DOB 14/03/1985", "born on March 14, 1985",
                                  "Geburtsdatum 14.03.1985", "born 14 Mar 1985", "D.O.B.: 03/14/1985"])
def test_dates_of_birth_need_a_birth_keyword(text):
    assert len(found("date-of-birth", text)) == 1


@pytest.mark.parametrize("text", [
    "Meeting on 1985-03-14",                     # a date without a birth keyword
    "DOB 1985-02-30",                            # not a calendar date
    "DOB 31/31/1985",
    "DOB 14/03/1850",                            # before 1900
    "date of birth " + "x" * 60 + " 1985-03-14",  # keyword too far away
])
def test_date_of_birth_near_misses(text):
    assert found("date-of-birth", text) == []


def test_future_date_is_not_a_birth_date():
    assert v.date_of_birth("2999-01-01") is None
    assert v.date_of_birth("01/02/2000", today=datetime.date(2024, 1, 1)) == "2000-02-01"


# ---------------------------------------------------------------- secrets

def test_private_keys_and_cloud_keys():
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----\nkey AKIAIOSFODNN7EXAMPLE"
    assert found("private-key", text) == ["-----BEGIN RSA PRIVATE KEY-----"]
    assert found("aws-access-key", text) == ["AKIAIOSFODNN7EXAMPLE"]
    assert masked("aws-access-key", text) == ["AKIA************MPLE"]
    assert found("private-key", "-----BEGIN PUBLIC KEY-----") == []
    assert found("aws-access-key", "AKIAIOSFODNN7EXAMPLEX XAKIAIOSFODNN7EXAMPLE AKIAiosfodnn7example") == []
    token = "ghp_" + "a1B2" * 9
    assert found("github-token", f"token={token}") == [token]


def test_masks_never_show_the_whole_value():
    text = ("4111111111111111 DE89370400440532013000 536-22-1234 AB123456C john@example.com "
            "+44 20 7946 0958 DOB 1985-03-14 AKIAIOSFODNN7EXAMPLE")
    scan = predefined_config().scanner.scan(text)
    assert scan.matches
    for matches in scan.matches.values():
        for match in matches:
            if match.identifier not in ("private-key",):
                assert match.masked != match.value
                assert match.value not in match.masked
