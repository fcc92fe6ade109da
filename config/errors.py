"""The errors services raise; ``status_code`` says how the API and the pages answer.

Plain Python with no web framework in it, so every layer may raise them; ``config.api`` maps
them to HTTP answers in one place.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code: int = 400
    code = "invalid"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class RequestTooLarge(DomainError):
    """A request body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``: refused before it is read."""

    status_code = 413
    code = "too_large"


# --- JSON refused by config.parsing, the one way in for JSON -----------------------------------


class JSONRefused(DomainError):
    """JSON text or a JSON value that may not come in; ``details["errors"]`` names where."""

    code = "invalid_json"


class JSONSyntaxError(JSONRefused):
    code = "parse_error"


class JSONTooDeep(JSONRefused):
    code = "too_deep"


class JSONInvalidText(JSONRefused):
    """Not UTF-8, a lone UTF-16 surrogate, or a NUL character (which PostgreSQL cannot store)."""

    code = "invalid_text"


class JSONNumberOutOfRange(JSONRefused):
    """An integer beyond signed 64 bits (what the database stores), or a number beyond a float's range."""

    code = "number_out_of_range"


class JSONDuplicateKey(JSONRefused):
    """An object naming a key twice: readers would disagree on which value counts."""

    code = "duplicate_key"
