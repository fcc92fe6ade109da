"""The hash chain: how an event is turned into bytes and hashed.

``hash = sha256(prev_hash || canonical JSON of the event)``, given by the sealer in sequence
order (audit/sealer.py); ``content_hash = sha256(canonical JSON of the event)``, given by the
writer. The canonical form must come
out the same when the event is read back from the database (PostgreSQL ``jsonb`` reorders
keys and prints numbers its own way; SQLite keeps the text), so ``json_value`` turns what a
caller passes into plain JSON values *before* the event is stored, and the hash is always
computed over what is stored.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from typing import cast

from audit.types import JSON

GENESIS_HASH = "0" * 64

HASHED_FIELDS = (
    "created_at",
    "actor_type",
    "actor_id",
    "actor_repr",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "agent_slug",
    "run_id",
    "data",
)


def json_value(value: object) -> JSON:
    """A JSON-native copy of ``value`` that survives a round trip through jsonb unchanged.

    - floats: an integral float becomes an int (jsonb prints ``1e16`` as
      ``10000000000000000``, which reads back as an int), NaN and infinities become
      strings (JSON and jsonb have no such numbers);
    - Decimal, UUID and anything else unknown become strings, dates and datetimes ISO strings;
    - strings lose NUL characters and lone surrogates (jsonb rejects both);
    - mapping keys become strings, tuples and sets become lists.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return int(value) if value.is_integer() else float(value)
    if isinstance(value, str):
        return _clean_text(str(value))
    if isinstance(value, Mapping):
        return {_json_key(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((json_value(item) for item in value), key=canonical_json)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return _clean_text(value.decode("utf-8", "replace"))
    return _clean_text(str(value))


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return _clean_text(str(key))
    # The key JSON itself would write: 1 -> "1", True -> "true", None -> "null".
    normal = json_value(key)
    return normal if isinstance(normal, str) else json.dumps(normal)


def _clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def canonical_json(value: JSON) -> str:
    # allow_nan=False: a NaN here means the value skipped json_value() and would not
    # survive PostgreSQL; fail loudly rather than store an event that cannot verify.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def created_at_text(created_at: dt.datetime) -> str:
    # Always UTC: the database may hand the value back in the connection's time zone.
    return created_at.astimezone(dt.UTC).isoformat()


def event_payload(fields: Mapping[str, object]) -> dict[str, object]:
    payload = {name: fields[name] for name in HASHED_FIELDS}
    payload["created_at"] = created_at_text(cast(dt.datetime, fields["created_at"]))
    return payload


def chain_hash(*, prev_hash: str, fields: Mapping[str, object]) -> str:
    """The hash of one event: ``fields`` maps every name in HASHED_FIELDS to its stored value."""
    body = prev_hash + canonical_json(event_payload(fields))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def event_hashes(*, prev_hash: str, fields: Mapping[str, object]) -> tuple[str, str]:
    """``(content_hash, chain_hash)`` of one event, from one canonical form: what the sealer takes."""
    body = canonical_json(event_payload(fields)).encode("utf-8")
    return hashlib.sha256(body).hexdigest(), hashlib.sha256(prev_hash.encode("utf-8") + body).hexdigest()


def content_hash(*, fields: Mapping[str, object]) -> str:
    """The hash of one event's own fields, without its place in the chain: taken when it is
    written, so that a change made before it is sealed shows."""
    return hashlib.sha256(canonical_json(event_payload(fields)).encode("utf-8")).hexdigest()
