"""The checkpoint key: Ed25519, from ``AUDIT_SIGNING_KEY``; what a checkpoint signs, and its check.

``AUDIT_SIGNING_KEY`` holds the private key as base64 of its 32 raw bytes or as PEM (PKCS #8).
With DEBUG and no key, one is generated once and kept in ``AUDIT_SIGNING_KEY_FILE``
(``<COUNTERSIGN_VAR_DIR>/audit-signing-key.pem``, mode 0600) so that checkpoints of a development
database keep verifying across restarts.
The private key is never logged or shown; only its public half and ``key_id`` are published.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ALGORITHM = "Ed25519"
# The first line of every signed checkpoint: names the log and the format's version.
MESSAGE_ORIGIN = "countersign audit checkpoint v1"
# The first line of a checkpoint's second statement, its tree head: "the Merkle tree (RFC 6962)
# over the first ``sequence`` events has this root", with the head and time of the checkpoint.
# A statement of its own, so that the first one keeps its published form.
TREE_MESSAGE_ORIGIN = "countersign audit tree head v1"


def _parse(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 key")
        return key
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ValueError("base64 of 32 bytes expected")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _development_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once keep one key (the loser reads the winner's).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
    return _parse(path.read_text())


@functools.cache
def signing_key() -> Ed25519PrivateKey:
    configured = str(getattr(settings, "AUDIT_SIGNING_KEY", "") or "")
    if not configured:
        development_file = getattr(settings, "AUDIT_SIGNING_KEY_FILE", None)
        if development_file is not None:
            return _development_key(Path(development_file))
        raise ImproperlyConfigured(
            "AUDIT_SIGNING_KEY is not set: set it to an Ed25519 private key (base64 of its 32 bytes, or PEM), "
            'e.g. python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())".'
        )
    try:
        return _parse(configured)
    except (ValueError, TypeError, binascii.Error):
        # The reason, never the value: this is a secret.
        raise ImproperlyConfigured(
            "AUDIT_SIGNING_KEY is not an Ed25519 private key: give base64 of its 32 bytes, or a PEM (PKCS #8) key."
        ) from None


def public_key_bytes(key: Ed25519PublicKey | None = None) -> bytes:
    key = key or signing_key().public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64() -> str:
    return base64.b64encode(public_key_bytes()).decode()


def key_id(public_key: bytes | None = None) -> str:
    """The first 16 hex digits of the public key's sha256: which key signed a checkpoint."""
    return hashlib.sha256(public_key if public_key is not None else public_key_bytes()).hexdigest()[:16]


def checkpoint_message(*, sequence: int, head_hash: str, sealed_at: dt.datetime) -> bytes:
    """The exact bytes a checkpoint's signature covers (UTF-8 lines, each ending in a newline)."""
    moment = sealed_at.astimezone(dt.UTC).isoformat()
    return f"{MESSAGE_ORIGIN}\n{sequence}\n{head_hash}\n{moment}\n".encode()


def checkpoint_sign(*, sequence: int, head_hash: str, sealed_at: dt.datetime) -> str:
    message = checkpoint_message(sequence=sequence, head_hash=head_hash, sealed_at=sealed_at)
    return base64.b64encode(signing_key().sign(message)).decode()


def tree_head_message(*, tree_size: int, root_hash: str, head_hash: str, sealed_at: dt.datetime) -> bytes:
    """The exact bytes a checkpoint's tree signature covers: origin, tree size (the checkpoint's
    sequence), Merkle root (hex), head hash, sealed_at; UTF-8 lines, each ending in a newline."""
    moment = sealed_at.astimezone(dt.UTC).isoformat()
    return f"{TREE_MESSAGE_ORIGIN}\n{tree_size}\n{root_hash}\n{head_hash}\n{moment}\n".encode()


def tree_head_sign(*, tree_size: int, root_hash: str, head_hash: str, sealed_at: dt.datetime) -> str:
    message = tree_head_message(tree_size=tree_size, root_hash=root_hash, head_hash=head_hash, sealed_at=sealed_at)
    return base64.b64encode(signing_key().sign(message)).decode()


def signature_ok(*, message: bytes, signature: str, public_key: bytes) -> bool:
    """True when ``signature`` (base64 Ed25519) is ``public_key``'s (32 raw bytes) over ``message``."""
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def checkpoint_signature_ok(
    *, sequence: int, head_hash: str, sealed_at: dt.datetime, signature: str, public_key: bytes
) -> bool:
    """True when ``signature`` (base64) is ``public_key``'s over this checkpoint: needs nothing else."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key = Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(raw, checkpoint_message(sequence=sequence, head_hash=head_hash, sealed_at=sealed_at))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
