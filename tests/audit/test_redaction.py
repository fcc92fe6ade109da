from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from audit.redaction import is_secret_key, mask_secrets
from audit.services import audit_record

pytestmark = pytest.mark.django_db

CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"


def stored_text(event: AuditEvent) -> str:
    return json.dumps(AuditEvent.objects.get(pk=event.pk).data)


def test_secrets_in_data_are_never_stored():
    event = audit_record(
        actor=None,
        action="tests.redaction.secrets",
        data={
            "password": "hunter2-secret-pw",
            "api_key": "abc123-private",
            "headers": {"Authorization": "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "Accept": "json"},
            "nested": [{"accessToken": "tok-live-value"}, {"clientSecret": "cs-live-value"}],
            "note": "use sk-live-ABCDEFGHIJKLMNOP1234 or Bearer abcdefghijklmnop.qrstuvwx",
            "dsn": "postgres://app:db-pass-42@db.internal/countersign",
        },
    )
    text = stored_text(event)
    for secret in (
        "hunter2-secret-pw",
        "abc123-private",
        "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
        "tok-live-value",
        "cs-live-value",
        "sk-live-ABCDEFGHIJKLMNOP1234",
        "abcdefghijklmnop.qrstuvwx",
        "db-pass-42",
    ):
        assert secret not in text
    data = AuditEvent.objects.get(pk=event.pk).data
    assert data["password"] == "***" and data["headers"]["Accept"] == "json"
    assert data["dsn"] == "postgres://app:***@db.internal/countersign"


def test_card_numbers_iban_and_email_are_masked():
    event = audit_record(
        actor=None,
        action="tests.redaction.pii",
        data={"card": CARD, "text": f"pay to {IBAN} from jane.doe@example.com", "cards": [CARD.replace(" ", "")]},
    )
    data = AuditEvent.objects.get(pk=event.pk).data
    assert data["card"] == "****1111" and data["cards"] == ["****1111"]
    assert data["text"] == "pay to GB**5432 from j***@example.com"
    assert "4111111111111111" not in stored_text(event) and "jane.doe" not in stored_text(event)


def test_numbers_that_are_not_cards_stay():
    data = mask_secrets({"order": "1234567890123", "amount": 1234567890123456, "date": "2026-11-24 09:24"})
    assert data == {"order": "1234567890123", "amount": 1234567890123456, "date": "2026-11-24 09:24"}


@pytest.mark.parametrize(
    "key", ["password", "PASSWORD", "api_key", "apiKey", "X-Api-Key", "csrfmiddlewaretoken", "refresh_token", "pin"]
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["prompt_tokens", "completion_tokens", "tokens", "bypass", "author", "amount", "pinned"]
)
def test_keys_that_only_look_like_secrets(key):
    assert not is_secret_key(key)


def test_token_counts_of_a_reasoning_step_stay_readable():
    event = audit_record(actor=None, action="tests.redaction.tokens", data={"tokens": [120, 30], "prompt_tokens": 120})
    assert AuditEvent.objects.get(pk=event.pk).data == {"tokens": [120, 30], "prompt_tokens": 120}
