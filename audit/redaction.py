"""Masks secrets and PII before anything reaches the audit log or a model.

One set of finders (``audit.finders``) serves both ``Redactor`` (placeholders for a model,
originals kept server-side) and ``mask_text``/``mask_secrets`` (masks for the audit log), so the
two cannot drift apart.
"""

from __future__ import annotations

import re

from audit.finders import (
    HEX_TOKEN,
    URL_PASSWORD,
    card_number,
    is_digest_key,
    is_secret_key,
    replace_key_values,
    scrub,
)
from audit.types import JSON

__all__ = ["Redactor", "is_secret_key", "mask_secrets", "mask_text", "url_masked"]


# --- Placeholders for a model -------------------------------------------------------------------


class Redactor:
    """Replaces PII and secrets with stable placeholders and remembers the originals.

    The mapping stays on the server: ``restore`` gives tools the real values back, a number
    as the number it was.
    """

    def __init__(self, mapping: dict[str, JSON] | None = None) -> None:
        self.mapping: dict[str, JSON] = dict(mapping or {})
        self._reverse = {_reverse_key(value): key for key, value in self.mapping.items()}

    def _placeholder(self, kind: str, value: JSON) -> str:
        known = self._reverse.get(_reverse_key(value))
        if known is not None:
            return known
        count = sum(1 for key in self.mapping if key.startswith(f"<{kind}_"))
        key = f"<{kind}_{count + 1}>"
        self.mapping[key] = value
        self._reverse[_reverse_key(value)] = key
        return key

    def redact_text(self, text: str) -> str:
        return scrub(text, self._placeholder)

    def redact(self, value: JSON) -> JSON:
        if isinstance(value, str):
            return self.redact_text(value)
        if card_number(value):
            return self._placeholder("CARD", value)
        if isinstance(value, dict):
            return {
                key: self._redact_secret(item) if is_secret_key(key) else self.redact(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        return value

    def _redact_secret(self, value: JSON) -> JSON:
        # Everything under a secret-named key is a secret, however it looks.
        if isinstance(value, dict):
            return {key: self._redact_secret(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._redact_secret(item) for item in value]
        if value is None or isinstance(value, bool) or value == "":
            return value
        return self._placeholder("SECRET", value)

    def restore(self, value: JSON) -> JSON:
        if isinstance(value, str):
            if value in self.mapping:
                return self.mapping[value]
            for key, original in self.mapping.items():
                if key in value:
                    value = value.replace(key, str(original))
            return value
        if isinstance(value, dict):
            return {key: self.restore(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.restore(item) for item in value]
        return value


def _reverse_key(value: object) -> tuple[str, str]:
    # 4111111111111111 and "4111111111111111" are different originals: keep their types apart.
    return type(value).__name__, str(value)


# --- Masks for the audit log ------------------------------------------------------------------


def _mask(kind: str, value: str) -> str:
    if kind == "EMAIL":
        return value[0] + "***@" + value.split("@", 1)[1]
    if kind == "IBAN":
        compact = value.replace(" ", "").upper()
        return compact[:2] + "**" + compact[-4:]
    if kind == "CARD":
        return "****" + re.sub(r"\D", "", value)[-4:]
    if kind == "PHONE":
        return "***" + re.sub(r"\D", "", value)[-2:]
    return "***"


def mask_text(value: str) -> str:
    """Secrets out; card numbers and IBANs to their last four characters, phone numbers to
    their last two digits, e-mail addresses to their first letter and domain."""
    return scrub(value, _mask)


def mask_secrets(value: JSON) -> JSON:
    """For the audit log: blank out values under secret-looking keys and mask PII."""
    if isinstance(value, dict):
        return {key: _mask_item(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    if card_number(value):
        return _mask("CARD", str(value))
    return value


def _mask_item(key: object, item: JSON) -> JSON:
    if is_secret_key(key):
        return "***"
    if is_digest_key(key) and isinstance(item, str) and HEX_TOKEN.fullmatch(item):
        return item
    return mask_secrets(item)


def url_masked(url: str) -> str:
    """A URL fit for a log line: ``redis://:secret@host`` becomes ``redis://:***@host`` and
    secret query parameters (``?password=...``) are masked too."""
    url = URL_PASSWORD.sub(lambda m: m.group(0)[: m.start("v") - m.start(0)] + "***@", url)
    return replace_key_values(url, _mask)
