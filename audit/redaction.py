"""Masks secrets and PII before anything reaches the audit log or a model."""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are secrets, matched word by word ("api_key", "apiKey", "X-Api-Key",
# "csrfmiddlewaretoken"), so that counts such as "prompt_tokens" or "bypass" stay readable.
SECRET_WORDS = frozenset(
    {
        "pass",
        "passwd",
        "password",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "auth",
        "authorization",
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
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def is_secret_key(key: object) -> bool:
    words = [word.lower() for word in _WORD_SEPARATORS.split(_CAMEL.sub("_", str(key))) if word]
    if any(word in SECRET_WORDS or word.endswith(SECRET_SUFFIXES) for word in words):
        return True
    return any(first + second in SECRET_WORD_PAIRS for first, second in zip(words, words[1:], strict=False))


EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w])\+?\d[\d ().-]{7,}\d(?![\w])")
CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
API_KEY = re.compile(
    r"\b(?:sk|pk|rk|ghp|gho|xox[abpr]|AKIA)[-_A-Za-z0-9]{12,}\b|\bBearer\s+[A-Za-z0-9._~+/=-]{12,}",
)
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# The password of a URL: scheme://user:password@host
URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")


def iban_ok(compact: str) -> bool:
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


class Redactor:
    """Replaces PII and secrets with stable placeholders and remembers the originals.

    The mapping stays on the server: ``restore`` gives tools the real values back.
    """

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping: dict[str, str] = dict(mapping or {})
        self._reverse = {value: key for key, value in self.mapping.items()}

    def _placeholder(self, kind: str, value: str) -> str:
        if value in self._reverse:
            return self._reverse[value]
        count = sum(1 for key in self.mapping if key.startswith(f"<{kind}_"))
        key = f"<{kind}_{count + 1}>"
        self.mapping[key] = value
        self._reverse[value] = key
        return key

    def redact_text(self, text: str) -> str:
        text = API_KEY.sub(lambda m: self._placeholder("SECRET", m.group(0)), text)
        text = EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group(0)), text)
        text = IBAN.sub(lambda m: self._placeholder("IBAN", m.group(0)), text)

        def card(match: re.Match[str]) -> str:
            digits = re.sub(r"\D", "", match.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                return self._placeholder("CARD", match.group(0))
            return match.group(0)

        text = CARD.sub(card, text)
        text = PHONE.sub(lambda m: self._placeholder("PHONE", m.group(0)), text)
        return text

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        return value

    def restore(self, value: Any) -> Any:
        if isinstance(value, str):
            for key, original in self.mapping.items():
                if key in value:
                    value = value.replace(key, original)
            return value
        if isinstance(value, dict):
            return {key: self.restore(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.restore(item) for item in value]
        return value


def mask_text(value: str) -> str:
    """Secrets out, card numbers and IBANs to their last four characters, e-mail addresses
    to their first letter and domain."""
    value = API_KEY.sub("***", value)
    value = JWT.sub("***", value)
    value = URL_PASSWORD.sub(lambda m: m.group(1) + ":***@", value)

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return "****" + digits[-4:] if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group(0)

    value = CARD.sub(card, value)

    def iban(match: re.Match[str]) -> str:
        compact = match.group(0).replace(" ", "")
        return compact[:2] + "**" + compact[-4:] if iban_ok(compact) else match.group(0)

    value = IBAN.sub(iban, value)
    return EMAIL.sub(lambda m: m.group(0)[0] + "***@" + m.group(0).split("@", 1)[1], value)


def mask_secrets(value: Any) -> Any:
    """For the audit log: blank out values under secret-looking keys and mask PII."""
    if isinstance(value, dict):
        return {key: "***" if is_secret_key(key) else mask_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
