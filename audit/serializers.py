"""What the audit API returns. Each class is an OpenAPI component named after it minus
"Serializer", so names are unique across the project."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from rest_framework import serializers

from audit.chain import HASHED_FIELDS
from audit.models import AuditEvent
from audit.selectors import AuditHead, AuditProof

if TYPE_CHECKING:
    pass


class AuditEventOutputSerializer(serializers.ModelSerializer[AuditEvent]):
    # "pending" until the sealer gives the event its place (sequence, prev_hash and hash are null).
    status = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        # Every field the hashes cover, with the event's place in the chain.
        fields = ["id", *HASHED_FIELDS, "content_hash", "status", "sequence", "prev_hash", "hash"]

    def get_status(self, event: AuditEvent) -> Literal["sealed", "pending"]:
        return "sealed" if event.sealed else "pending"


class AuditHeadSerializer(serializers.Serializer[AuditHead]):
    """The latest signed checkpoint: the first ``sequence`` events of the chain end in ``head_hash``.

    Check ``signature`` (base64 Ed25519) over ``signed_message`` with ``public_key`` (base64 of
    the raw 32-byte key); record the head elsewhere and ``audit_verify --expect-head`` proves later
    that the log still holds it.
    """

    sequence = serializers.IntegerField(help_text="Sealed events the checkpoint covers (0 before the first seal).")
    head_hash = serializers.CharField(help_text="The hash of event number `sequence` (the genesis hash at 0).")
    sealed_at = serializers.DateTimeField(allow_null=True)
    signature = serializers.CharField(allow_null=True, help_text="Base64 Ed25519 signature of signed_message.")
    key_id = serializers.CharField(allow_null=True, help_text="First 16 hex digits of sha256(public key).")
    signed_message = serializers.CharField(
        allow_null=True, help_text="The exact text signed: origin, sequence, head hash, sealed_at, one per line."
    )
    public_key = serializers.CharField(help_text="Base64 of the raw 32-byte Ed25519 public key.")
    algorithm = serializers.CharField()
    pending = serializers.IntegerField(help_text="Events written but not sealed yet.")
    root_hash = serializers.CharField(
        allow_null=True, help_text="Root (hex) of the RFC 6962 Merkle tree over the first `sequence` events."
    )
    tree_signature = serializers.CharField(
        allow_null=True, help_text="Base64 Ed25519 signature of tree_signed_message, with the same key."
    )
    tree_signed_message = serializers.CharField(
        allow_null=True, help_text="The exact text of the tree head: origin, tree size, root, head hash, sealed_at."
    )


class AuditProofCheckpointSerializer(serializers.Serializer[dict[str, object]]):
    sequence = serializers.IntegerField(help_text="The checkpoint's place: also the size of its tree.")
    head_hash = serializers.CharField()
    sealed_at = serializers.DateTimeField()
    root_hash = serializers.CharField()
    tree_signature = serializers.CharField(help_text="Base64 Ed25519 signature of tree_signed_message.")
    tree_signed_message = serializers.CharField()
    key_id = serializers.CharField()


class AuditProofSerializer(serializers.Serializer[AuditProof]):
    """One event's inclusion proof (RFC 6962 audit path) in the tree a signed checkpoint names.

    Check it with the public key alone: ``audit.proofs.proof_verify`` or ``manage.py
    audit_proof_verify``. Leaf ``leaf_index`` of the tree is SHA-256(0x00 || the event's hash as
    32 bytes); a node is SHA-256(0x01 || left || right); the path lists siblings from the leaf up.
    """

    event = AuditEventOutputSerializer()
    leaf_index = serializers.IntegerField(help_text="The event's place in the chain less one.")
    tree_size = serializers.IntegerField()
    root_hash = serializers.CharField()
    audit_path = serializers.ListField(child=serializers.CharField(), help_text="Hex hashes, the leaf's sibling first.")
    checkpoint = AuditProofCheckpointSerializer()
    public_key = serializers.CharField(help_text="Base64 of the raw 32-byte Ed25519 public key.")
    algorithm = serializers.CharField()
