"""Reading the environment for the settings: typed values, and a bad value stops the start with
a message that names the variable and what to set. Imports no app code."""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured


def password_masked(url: str) -> str:
    """A URL fit for an error message: its password replaced by ***. (Settings import no app code,
    so this is not ``audit.redaction.url_masked``, which also masks query secrets.)"""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: set {name} to 1 or 0.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer: set {name} to a whole number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} is below {minimum}: set {name} to {minimum} or more.")
    return value


def env_share(name: str, default: float) -> float:
    """A share from 0 to 1, such as 0.8."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a share: set {name} to a number from 0 to 1, such as 0.8.")
    return value


def env_decimal(name: str, default: str) -> Decimal:
    """A decimal number such as 0.0005 (prices)."""
    raw = os.environ.get(name) or default
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number: set {name} to a decimal such as 0.0005.") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_prices(name: str) -> dict[str, tuple[Decimal, Decimal]]:
    """A JSON object of model prices per 1,000 tokens: ``{"gpt-4o": {"prompt": 0.0025, "completion": 0.01}}``."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return {}
    shape = f'set {name} to a JSON object such as {{"gpt-4o": {{"prompt": 0.0025, "completion": 0.01}}}}'
    try:
        value = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON ({exc}): {shape}.") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} is not a JSON object: {shape}.")
    prices: dict[str, tuple[Decimal, Decimal]] = {}
    for model, price in value.items():
        if (
            not model
            or not isinstance(price, dict)
            or set(price) != {"prompt", "completion"}
            or not all(isinstance(p, Decimal) and p.is_finite() and p >= 0 for p in price.values())
        ):
            raise ImproperlyConfigured(
                f"{name}: the price of {model!r} must be an object of two numbers of 0 or more, "
                f"prompt and completion: {shape}."
            )
        prices[model] = (price["prompt"], price["completion"])
    return prices
