"""Checking an event's inclusion proof with the public key alone: no database, no Django settings.

A proof (``GET /api/v1/audit/events/{id}/proof/``, or ``audit.selectors.audit_event_proof``) is a
JSON document: the event with its place and hashes, its leaf index, the tree size, the audit
path and the checkpoint whose tree head signs the root. ``proof_verify`` checks, in order:

1. the event's content and link give its chain hash (``hash = sha256(prev_hash || canonical JSON)``);
2. its leaf index is its place in the chain less one, and within the tree;
3. the audit path takes its leaf hash to the root named in the checkpoint (RFC 6962);
4. the checkpoint's tree head (size, root, head hash, time) is signed by the given key.

So a holder of the public key learns that the event, exactly as shown, is number ``sequence`` of
a log whose first ``tree_size`` events the key's holder signed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.chain import HASHED_FIELDS, chain_hash
from audit.merkle import leaf_hash, root_from_inclusion_path
from audit.signing import signature_ok, tree_head_message


@dataclass(frozen=True)
class ProofCheck:
    problem: str = ""  # empty when the proof holds

    @property
    def ok(self) -> bool:
        return not self.problem


def _hex32(value: object, what: str) -> bytes:
    text = str(value)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or len(text) != 64:
        raise ValueError(f"{what} is not 64 hex digits")
    return raw


def _event_fields(event: Mapping[str, Any]) -> dict[str, object]:
    fields = {name: event[name] for name in HASHED_FIELDS}
    created = str(fields["created_at"])
    fields["created_at"] = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    return fields


def proof_verify(document: Mapping[str, Any], *, public_key: bytes) -> ProofCheck:
    """Check an inclusion proof document against ``public_key`` (32 raw Ed25519 bytes)."""
    try:
        return _verify(document, public_key)
    except (KeyError, TypeError, ValueError) as exc:
        return ProofCheck(f"the proof is malformed: {exc}")


def _verify(document: Mapping[str, Any], public_key: bytes) -> ProofCheck:
    event, checkpoint = document["event"], document["checkpoint"]
    event_hash = _hex32(event["hash"], "the event's hash")
    if chain_hash(prev_hash=str(event["prev_hash"]), fields=_event_fields(event)) != event["hash"]:
        return ProofCheck("the event's content and link do not give its hash (the event shown was altered)")
    size, index = int(document["tree_size"]), int(document["leaf_index"])
    if size != int(checkpoint["sequence"]):
        return ProofCheck("the tree size is not the checkpoint's")
    if index != int(event["sequence"]) - 1:
        return ProofCheck("the leaf index is not the event's place in the chain")
    path = [_hex32(node, "an audit path node") for node in document["audit_path"]]
    root = _hex32(checkpoint["root_hash"], "the checkpoint's root")
    try:
        proven = root_from_inclusion_path(index=index, size=size, leaf=leaf_hash(event_hash), path=path)
    except ValueError as exc:
        return ProofCheck(f"the audit path does not fit a tree of {size} events: {exc}")
    if proven != root:
        return ProofCheck("the audit path does not lead to the checkpoint's root (the event is not in that tree)")
    message = tree_head_message(
        tree_size=size,
        root_hash=root.hex(),
        head_hash=str(checkpoint["head_hash"]),
        sealed_at=dt.datetime.fromisoformat(str(checkpoint["sealed_at"]).replace("Z", "+00:00")),
    )
    if not signature_ok(message=message, signature=str(checkpoint["tree_signature"]), public_key=public_key):
        return ProofCheck("the checkpoint's tree head signature does not verify with this public key")
    return ProofCheck()
