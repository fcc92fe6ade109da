"""Finders of secrets and PII in text, shared by ``audit.redaction``'s placeholders and masks.

Each finder errs towards ordinary numbers staying readable: card numbers need a known card
prefix and the Luhn check, IBANs their country's length and the mod-97 check, phone numbers a
``+``, a trunk ``0`` or the North American shape, and dates are never phone numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

# Keys whose values are secrets, matched word by word ("api_key", "apiKey", "X-Api-Key",
# "csrfmiddlewaretoken"), so that counts such as "prompt_tokens" or "bypass" stay readable.
SECRET_WORDS = frozenset(
    {
        "pass",
        "passwd",
        "password",
        "passphrase",
        "passcode",
        "pwd",
        "secret",
        "token",
        "auth",
        "authorization",
        "bearer",
        "jwt",
        "cookie",
        "credential",
        "credentials",
        "signature",
        "cvv",
        "cvc",
        "pin",
        "otp",
    }
)
SECRET_WORD_PAIRS = frozenset({"apikey", "privatekey", "accesskey", "secretkey", "sessionid", "setcookie"})
SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "apikey", "cookie")
# A hex digest under one of these keys is a checksum the audit log must keep (an arguments
# hash, an ETag), not an opaque token.
DIGEST_WORDS = frozenset({"hash", "digest", "checksum", "sha1", "sha256", "sha512", "md5", "etag", "fingerprint"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def _key_words(key: object) -> list[str]:
    return [word.lower() for word in _WORD_SEPARATORS.split(_CAMEL.sub("_", str(key))) if word]


# Every audited value's keys are classified on every append, and they come from a small set
# (tool argument names, "output", "latency_ms"): the answers are kept per key text.
@functools.lru_cache(maxsize=4096)
def _secret_key_text(text: str) -> bool:
    words = _key_words(text)
    if any(word in SECRET_WORDS or word.endswith(SECRET_SUFFIXES) for word in words):
        return True
    return any(first + second in SECRET_WORD_PAIRS for first, second in zip(words, words[1:], strict=False))


@functools.lru_cache(maxsize=4096)
def _digest_key_text(text: str) -> bool:
    words = _key_words(text)
    return bool(words) and words[-1] in DIGEST_WORDS


def is_secret_key(key: object) -> bool:
    return _secret_key_text(str(key))


def is_digest_key(key: object) -> bool:
    return _digest_key_text(str(key))


# --- Finders ---------------------------------------------------------------------------------
#
# A finder takes the text and ``replace(kind, value) -> str`` and returns the text with every
# value it recognises replaced. Kinds: SECRET, EMAIL, IBAN, CARD, PHONE.

Replace = Callable[[str, str], str]

# The password of a URL: scheme://user:password@host (the user may be empty: redis://:pw@host).
URL_PASSWORD = re.compile(r"(?<=://)[^/\s:@]*:(?P<v>[^/\s@]+)@")
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# Keys with a vendor prefix: OpenAI/Anthropic/Stripe (sk-, sk_live_, pk_, rk_), GitHub (ghp_,
# gho_, ghu_, ghs_, ghr_, github_pat_), Slack (xoxb-...), AWS access key ids, GitLab, Google,
# Hugging Face, npm, SendGrid, Stripe webhook secrets.
API_KEY = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:sk|pk|rk)[-_](?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{12,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abeoprs]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|npm_[A-Za-z0-9]{30,}"
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
    r"|whsec_[A-Za-z0-9]{20,}"
    r")"
)
# The credential of an Authorization header in text: "Bearer <token>", "Basic <base64>", "Token <key>".
AUTH_SCHEME = re.compile(r"\b(?:Bearer|Basic|Token)\s+(?P<v>[A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE)
# "password=...", "api_key: ...", "?access_token=...": the key decides (is_secret_key), the
# value ends at white space, a quote or a separator. A value may be quoted: "password": "x".
KEY_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(?P<k>[A-Za-z][A-Za-z0-9_.-]{0,40}?)[\"']?\s*(?P<sep>[:=]\s*)[\"']?"
    # A lookahead: a value that is not a secret may itself hold "key=value" pairs to look at.
    r"(?=(?:(?:Bearer|Basic|Token)\s+)?(?P<v><[A-Z]+_\d+>|[^\s\"'&,;<>()\[\]{}]{1,256}))",
)
# Long opaque tokens without a prefix: hex (32+), or base64/base64url (32+) that mixes upper
# case, lower case and digits the way random strings do.
HEX_TOKEN = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
B64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,32}")
# Runs of digits joined by single spaces or dashes; the card inside is found by card_span().
DIGIT_GROUPS = re.compile(r"(?<![\w.,+-])\d+(?:[ -]\d+)*(?![\w]|[.,]\d)")
PHONE = re.compile(
    r"(?<![\w+/.,-])(?:"
    # International: +44 20 7946 0958, +1 (555) 123-4567, +4915112345678, 0044 20 7946 0958.
    r"(?:\+|00(?=[1-9]\d{0,2}[ .-]))[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,6}+){1,6}+"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567.
    r"|(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?\d{3}[ .-]\d{4}"
    # National with a trunk 0: 020 7946 0958, 07700 900123, 030/1234567, 06.12.34.56.78.
    r"|(?:\(0\d{1,4}\)|0\d{1,4})[ ./-]?\d{2,8}(?:[ .-]\d{2,4}){0,4}"
    r")(?![\w]|[.,:]\d)"
)
# A date stands alone: "24.11.2026" is one, "06.12.34.56.78" (a French phone number) is not.
DATE_LIKE = re.compile(
    r"(?<!\d)(?<!\d[-./])(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(?!\d|[-./]\d)"
)

# IBAN lengths by country (SWIFT IBAN registry); a country not listed needs 15 to 34 characters.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    compact = compact.upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if not (len(compact) == expected if expected else 15 <= len(compact) <= 34):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_number_ok(digits: str) -> bool:
    """A payment card number: an issuer prefix in use, a length it issues, and the Luhn check.

    The prefix keeps ids, timestamps and compact dates (which start with 1 or 20) readable:
    one in ten random numbers passes Luhn alone.
    """
    if not (13 <= len(digits) <= 19 and digits.isdigit()):
        return False
    two, four = int(digits[:2]), int(digits[:4])
    issued = (
        digits[0] == "4"  # Visa
        or 51 <= two <= 55  # Mastercard
        or 2221 <= four <= 2720  # Mastercard 2-series
        or 2200 <= four <= 2204  # Mir
        or two in (34, 37)  # American Express
        or two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305  # Diners Club
        or 3528 <= four <= 3589  # JCB
        or two in (50, 56, 57, 58) or digits[0] == "6"  # Maestro, Discover, UnionPay, RuPay
    )  # fmt: skip
    return issued and luhn_ok(digits)


Finder = Callable[[str, Replace], str]


def _sub_group(pattern: re.Pattern[str], kind: str, accept: Callable[[str], bool] | None = None) -> Finder:
    """A finder that replaces group ``v`` of each match (the whole match without one)."""
    group = "v" if "v" in pattern.groupindex else 0

    def finder(text: str, replace: Replace) -> str:
        def one(match: re.Match[str]) -> str:
            value = match.group(group)
            if accept is not None and not accept(value):
                return match.group(0)
            start, end = match.start(group) - match.start(0), match.end(group) - match.start(0)
            whole = match.group(0)
            return whole[:start] + replace(kind, value) + whole[end:]

        return pattern.sub(one, text)

    return finder


def _masked_already(value: str) -> bool:
    return set(value) <= {"*"} or (value.startswith("<") and value.endswith(">"))


def _prose_word(value: str) -> bool:
    # "Bearer authentication", "password: forgotten" are prose, not credentials: a short run of
    # lower-case letters is left alone.
    return value.isalpha() and value.islower() and len(value) <= 14


def replace_key_values(text: str, replace: Replace) -> str:
    out: list[str] = []
    done = 0
    for match in KEY_VALUE.finditer(text):
        start, end = match.span("v")
        value = match.group("v")
        if start < done or not is_secret_key(match.group("k")) or _masked_already(value):
            continue
        if match.group("sep") != match.group("sep").strip() and _prose_word(value):
            continue  # "password: forgotten" in a sentence; "password=x" is always a credential
        out += [text[done:start], replace("SECRET", value)]
        done = end
    return "".join(out) + text[done:]


def _looks_random(value: str) -> bool:
    body = value.rstrip("=")
    # Both cases present (compared in C: this runs on every long word of every audited text).
    if len(body) < 32 or body == body.lower() or body == body.upper():
        return False
    # Random strings scatter their digits; identifiers such as "Report2024Edition" keep them together.
    return len(re.findall(r"\d+", body)) >= 2


def _opaque(text: str, replace: Replace) -> str:
    def one(match: re.Match[str]) -> str:
        value = match.group(0)
        if "/" in value and "+" not in value and not value.endswith("="):
            # A path rather than standard base64: look at its segments one by one.
            return "/".join(replace("SECRET", part) if _looks_random(part) else part for part in value.split("/"))
        return replace("SECRET", value) if _looks_random(value) else value

    return B64_TOKEN.sub(one, text)


def _hex_token(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _iban(text: str, replace: Replace) -> str:
    def one(match: re.Match[str]) -> str:
        whole = match.group(0)
        # The pattern also takes words that follow an IBAN ("... 7654 32 NOW"): find the longest
        # prefix that is a valid IBAN and leave the rest.
        positions = [i + 1 for i, char in enumerate(whole) if char != " "]
        for end in reversed(positions):
            candidate = whole[:end]
            following = whole[end:] or match.string[match.end() : match.end() + 1]
            if following[:1].isalnum():
                continue  # ends inside a word
            if iban_ok(candidate.replace(" ", "")):
                return replace("IBAN", candidate) + whole[end:]
        return whole

    return IBAN.sub(one, text)


def card_span(groups: list[str], start: int = 0) -> tuple[int, int] | None:
    """The longest run of consecutive digit groups from ``start`` on that is a card number,
    leftmost first. A card has at most 19 digits, so each run stops there (linear in groups)."""
    for first in range(start, len(groups)):
        digits, found = "", None
        for last in range(first + 1, len(groups) + 1):
            digits += groups[last - 1]
            if len(digits) > 19:
                break
            if card_number_ok(digits):
                found = (first, last)
        if found is not None:
            return found
    return None


def _cards(text: str, replace: Replace) -> str:
    def one(match: re.Match[str]) -> str:
        whole = match.group(0)
        pieces = re.split(r"([ -])", whole)  # digits, separator, digits, ...
        groups, separators = pieces[::2], pieces[1::2]
        out: list[str] = []
        index = 0
        while index < len(groups):
            span = card_span(groups, index)
            if span is None:
                out.append(_join(groups[index:], separators[index:]))
                break
            first, last = span
            if first > index:
                out.append(_join(groups[index:first], separators[index:first]) + separators[first - 1])
            out.append(replace("CARD", _join(groups[first:last], separators[first:last])))
            if last < len(groups):
                out.append(separators[last - 1])
            index = last
        return "".join(out)

    return DIGIT_GROUPS.sub(one, text)


def _join(groups: list[str], separators: list[str]) -> str:
    text = groups[0] if groups else ""
    for group, separator in zip(groups[1:], separators, strict=False):
        text += separator + group
    return text


def _phone(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if DATE_LIKE.search(value):
        return False
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    # A leading 0 alone is also how zero-padded ids look: a separator or brackets must show.
    separated = bool(re.search(r"[ ./()-]", value))
    if value.startswith("00"):
        return separated and 8 <= len(digits) - 2 <= 15
    if value.lstrip("(").startswith("0"):
        return separated and 9 <= len(digits) <= 12
    return len(digits) == 10


FINDERS: tuple[Finder, ...] = (
    _sub_group(URL_PASSWORD, "SECRET", lambda v: not _masked_already(v)),
    _sub_group(JWT, "SECRET"),
    _sub_group(API_KEY, "SECRET"),
    _sub_group(AUTH_SCHEME, "SECRET", lambda v: not _prose_word(v) and not _masked_already(v)),
    replace_key_values,
    _sub_group(HEX_TOKEN, "SECRET", _hex_token),
    _opaque,
    _sub_group(EMAIL, "EMAIL"),
    _iban,
    _cards,
    _sub_group(PHONE, "PHONE", _phone),
)


def scrub(text: str, replace: Replace) -> str:
    """Every finder in turn; a later one sees the replacements of the earlier ones."""
    for finder in FINDERS:
        text = finder(text, replace)
    return text


def card_number(value: object) -> bool:
    """A JSON number that is a card number (``{"card": 4111111111111111}``)."""
    return isinstance(value, int) and not isinstance(value, bool) and card_number_ok(str(abs(value)))
