"""What the audit API returns. Each class is an OpenAPI component named after it minus
"Serializer", so names are unique across the project."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import serializers

from audit.chain import HASHED_FIELDS
from audit.models import AuditEvent
from audit.selectors import AuditHead

if TYPE_CHECKING:
    pass


class AuditEventOutputSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        # Every field the hash covers, with the event's place in the chain.
        fields = ["id", *HASHED_FIELDS, "prev_hash", "hash"]


class AuditHeadSerializer(serializers.Serializer[AuditHead]):
    """The newest event of the chain: record its hash elsewhere to detect a rewrite."""

    id = serializers.IntegerField(allow_null=True)
    hash = serializers.CharField()
    created_at = serializers.DateTimeField(allow_null=True)
    count = serializers.IntegerField()
