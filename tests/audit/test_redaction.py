from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from audit.redaction import Redactor, is_secret_key, mask_secrets, mask_text, url_masked
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


# --- Both the audit masks and the model's placeholders cover every kind ----------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PII_AND_SECRETS = [
    ("mail jane.doe@example.com today", "jane.doe@example.com", "j***@example.com"),
    ("call +44 20 7946 0958 now", "+44 20 7946 0958", "***58"),
    ("call (555) 123-4567 now", "(555) 123-4567", "***67"),
    ("call 555-123-4567 now", "555-123-4567", "***67"),
    ("call 020 7946 0958 now", "020 7946 0958", "***58"),
    ("call +4915112345678 now", "+4915112345678", "***78"),
    ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111", "****1111"),
    ("card 5500-0000-0000-0004.", "5500-0000-0000-0004", "****0004"),
    ("amex 378282246310005", "378282246310005", "****0005"),
    ("ref 12 4111111111111111 end", "4111111111111111", "****1111"),
    ("iban GB82WEST12345698765432 NOW", "GB82WEST12345698765432", "GB**5432"),
    ("iban de89 3704 0044 0532 0130 00.", "de89 3704 0044 0532 0130 00", "DE**3000"),
    ("key sk-proj-Ab12Cd34Ef56Gh78 here", "sk-proj-Ab12Cd34Ef56Gh78", "***"),
    ("pat ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "***"),
    ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "***"),
    (f"jwt {JWT}", JWT, "***"),
    ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz", "***"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "***"),
    ("hex 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "***"),
    ("b64 AbC1dEf2GhI3jKl4MnO5pQr6StU7vWx8yZ90", "AbC1dEf2GhI3jKl4MnO5pQr6StU7vWx8yZ90", "***"),
    ("https://x.test/reset/AbC1dEf2GhI3jKl4MnO5pQr6StU7vWx8?a=1", "AbC1dEf2GhI3jKl4MnO5pQr6StU7vWx8", "***"),
    ('{"password": "hunter2"}', "hunter2", "***"),
    ("login?user=bob&access_token=xyz", "xyz", "***"),
    ("redis://:s3cret-pw@cache:6379/0", "s3cret-pw", "***"),
]


@pytest.mark.parametrize(("text", "secret", "mask"), PII_AND_SECRETS)
def test_mask_text_covers_every_kind(text, secret, mask):
    assert mask_text(text) == text.replace(secret, mask)


@pytest.mark.parametrize(("text", "secret", "mask"), PII_AND_SECRETS)
def test_redactor_covers_every_kind_and_restores_it(text, secret, mask):
    redactor = Redactor()
    redacted = redactor.redact_text(text)
    assert secret not in redacted
    [(placeholder, original)] = redactor.mapping.items()
    assert original == secret and redacted == text.replace(secret, placeholder)
    assert redactor.restore(redacted) == text


ORDINARY = [
    "refund 1234.56 EUR, 1,234,567.89 USD, 42",
    "order 1234567890123, ticket #123456, id 20261124092433, epoch 1732441440000",
    "on 2026-11-24 09:24:33, 24.11.2026 10:30, 11/24/2026, 2026-11-24T09:24:33.123456+00:00",
    "zero-padded 0012345678, version 10.0.19045.2965, ip 192.168.100.254, +1500 points",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "prompt_tokens: 120, completion_tokens=30, tokens 150",
    "ThisIsAVeryLongCamelCaseName2024Edition and a_very_long_snake_case_identifier_name",
    "I forgot my password: can you reset it? Bearer authentication is used.",
    "pk_user_account_id is a column; skeleton_structure_is_fine",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_numbers_dates_and_words_stay(text):
    assert mask_text(text) == text
    redactor = Redactor()
    assert redactor.redact_text(text) == text and redactor.mapping == {}


def test_card_number_given_as_a_json_number():
    assert mask_secrets({"card": 4111111111111111, "amount": 1234567890123456, "n": 4}) == {
        "card": "****1111",
        "amount": 1234567890123456,
        "n": 4,
    }
    redactor = Redactor()
    redacted = redactor.redact({"card": 4111111111111111, "cards": [5500000000000004]})
    assert redacted == {"card": "<CARD_1>", "cards": ["<CARD_2>"]}
    # The tool gets the number back as a number, not as a string.
    assert redactor.restore(redacted) == {"card": 4111111111111111, "cards": [5500000000000004]}


def test_values_under_secret_named_keys():
    data = {
        "password": "pw",
        "apikey": 123456,
        "Authorization": "Token abc",
        "client": {"client_secret": ["a", "b"], "name": "acme"},
        "token": None,
    }
    assert mask_secrets(data) == {
        "password": "***",
        "apikey": "***",
        "Authorization": "***",
        "client": {"client_secret": "***", "name": "acme"},
        "token": "***",
    }
    redactor = Redactor()
    redacted = redactor.redact(data)
    assert redacted == {
        "password": "<SECRET_1>",
        "apikey": "<SECRET_2>",
        "Authorization": "<SECRET_3>",
        "client": {"client_secret": ["<SECRET_4>", "<SECRET_5>"], "name": "acme"},
        "token": None,
    }
    assert redactor.restore(redacted) == data


def test_placeholders_are_stable_across_a_run():
    redactor = Redactor()
    first = redactor.redact({"to": "jane@example.com", "card": "4111111111111111"})
    again = Redactor(redactor.mapping).redact({"cc": "jane@example.com"})
    assert first == {"to": "<EMAIL_1>", "card": "<CARD_1>"} and again == {"cc": "<EMAIL_1>"}


def test_digests_under_hash_keys_stay_for_the_audit_log():
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert mask_secrets({"arguments_hash": digest, "note": f"token {digest}"}) == {
        "arguments_hash": digest,
        "note": "token ***",
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
        ("rediss://default:p%40ss@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("postgres://app:pw@db:5432/countersign", "postgres://app:***@db:5432/countersign"),
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        ("redis://cache.internal:6379/0", "redis://cache.internal:6379/0"),
        ("unix:///var/countersign/redis.sock", "unix:///var/countersign/redis.sock"),
    ],
)
def test_url_masked(url, shown):
    assert url_masked(url) == shown


def test_long_input_stays_fast():
    import time

    started = time.monotonic()
    for text in ("1 " * 20000 + "x", ("+" + "1" * 60 + " ") * 500, "a." * 50000, "a=" * 30000):
        mask_text(text)
    assert time.monotonic() - started < 10
