"""An event's inclusion proof against a signed checkpoint: GET /api/v1/audit/events/{id}/proof/,
checked with the public key alone (audit.proofs, ``manage.py audit_proof_verify``)."""

from __future__ import annotations

import base64
import copy
import json
from io import StringIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from audit.models import AuditCheckpoint, AuditEvent
from audit.proofs import proof_verify
from audit.sealer import seal_pending
from audit.selectors import audit_chain_verify
from audit.services import audit_record
from audit.signing import public_key_bytes, tree_head_sign
from tests.audit.test_api import client_for
from tests.audit.test_chain import _tamper

pytestmark = pytest.mark.django_db


def proof_url(event_id: object, query: str = "") -> str:
    return f"/api/v1/audit/events/{event_id}/proof/{query}"


@pytest.fixture
def api(auditor) -> APIClient:
    return client_for(auditor)


def write(count: int, action: str = "tests.proofs.event") -> list[AuditEvent]:
    return [audit_record(actor=None, action=action, data={"n": index, "note": "é"}) for index in range(count)]


def test_every_event_of_a_chain_sealed_in_many_batches_is_proven_against_every_checkpoint(api):
    events = write(23)
    # Batches of 4: each checkpoint extends the tree from the frontier the one before it kept.
    while seal_pending(batch_size=4):
        pass
    checkpoints = list(AuditCheckpoint.objects.order_by("sequence").values_list("sequence", flat=True))
    assert checkpoints == [4, 8, 12, 16, 20, 23]
    key = public_key_bytes()
    for checkpoint in checkpoints:
        for event in events:
            sequence = AuditEvent.objects.get(pk=event.pk).sequence
            response = api.get(proof_url(event.pk, f"?checkpoint={checkpoint}"))
            if sequence > checkpoint:
                assert response.status_code == 409, response.content
                assert response.json()["code"] == "not_provable"
                continue
            assert response.status_code == 200, response.content
            proof = response.json()
            assert (proof["leaf_index"], proof["tree_size"]) == (sequence - 1, checkpoint)
            assert proof_verify(proof, public_key=key).ok, (event.pk, checkpoint)
    assert audit_chain_verify().intact


def test_the_latest_checkpoint_is_the_default_and_the_head_shows_its_tree(api):
    events = write(5)
    seal_pending()
    proof = api.get(proof_url(events[1].pk)).json()
    head = api.get("/api/v1/audit/head/").json()
    assert proof["tree_size"] == head["sequence"] == 5
    assert proof["root_hash"] == head["root_hash"] == proof["checkpoint"]["root_hash"]
    assert head["tree_signed_message"] == proof["checkpoint"]["tree_signed_message"]
    assert head["tree_signed_message"].startswith(f"countersign audit tree head v1\n5\n{head['root_hash']}\n")
    # The checkpoint's first statement keeps its published form.
    assert head["signed_message"].startswith("countersign audit checkpoint v1\n5\n")


def altered(proof: dict, change) -> dict:
    copied = copy.deepcopy(proof)
    change(copied)
    return copied


def test_a_tampered_proof_or_another_key_fails(api):
    events = write(9)
    seal_pending()
    proof = api.get(proof_url(events[4].pk)).json()
    key = public_key_bytes()
    assert proof_verify(proof, public_key=key).ok

    def flip(text: str) -> str:
        return ("1" if text[0] != "1" else "2") + text[1:]

    cases = {
        "the event's content": lambda p: p["event"]["data"].update(n=99),
        "the event's time": lambda p: p["event"].update(created_at="2000-01-01T00:00:00Z"),
        "the event's hash": lambda p: p["event"].update(hash=flip(p["event"]["hash"])),
        "the leaf index": lambda p: p.update(leaf_index=p["leaf_index"] + 1),
        "the tree size": lambda p: p.update(tree_size=p["tree_size"] + 1),
        "a path node": lambda p: p["audit_path"].__setitem__(0, flip(p["audit_path"][0])),
        "a removed node": lambda p: p["audit_path"].pop(),
        "an added node": lambda p: p["audit_path"].append("0" * 64),
        "the root": lambda p: p["checkpoint"].update(root_hash=flip(p["checkpoint"]["root_hash"])),
        "the head": lambda p: p["checkpoint"].update(head_hash=flip(p["checkpoint"]["head_hash"])),
        "the signature": lambda p: p["checkpoint"].update(
            tree_signature=base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
        ),
        "a missing part": lambda p: p.pop("audit_path"),
        "a hash that is not hex": lambda p: p["audit_path"].__setitem__(0, "zz" * 32),
    }
    for what, change in cases.items():
        check = proof_verify(altered(proof, change), public_key=key)
        assert not check.ok, what
    other = Ed25519PrivateKey.generate().public_key()
    assert "signature does not verify" in proof_verify(proof, public_key=public_key_bytes(other)).problem


def test_audit_proof_verify_needs_only_the_proof_and_the_key(api, tmp_path):
    [event] = write(1)
    seal_pending()
    proof = api.get(proof_url(event.pk)).json()
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    key = base64.b64encode(public_key_bytes()).decode()
    out = StringIO()
    call_command("audit_proof_verify", str(path), public_key=key, stdout=out)
    assert f"event {event.pk} is number 1 of the 1 events signed at checkpoint 1" in out.getvalue()

    proof["event"]["action"] = "tests.proofs.forged"
    path.write_text(json.dumps(proof))
    with pytest.raises(CommandError, match="Proof does not hold: the event's content") as refused:
        call_command("audit_proof_verify", str(path), public_key=key, stdout=StringIO())
    assert refused.value.returncode == 1
    with pytest.raises(CommandError, match="32 bytes"):
        call_command("audit_proof_verify", str(path), public_key=base64.b64encode(b"short").decode())
    path.write_text("[1, 2]")
    with pytest.raises(CommandError, match="not a JSON object"):
        call_command("audit_proof_verify", str(path), public_key=key)


def test_bad_ids_are_404_and_malformed_parameters_400_changing_nothing(api):
    [event] = write(1)
    seal_pending()
    checkpoints = AuditCheckpoint.objects.count()
    for bad in ("abc", "0", "-1", "99999999", "9" * 30, "1.5"):
        response = api.get(proof_url(bad))
        assert response.status_code == 404, bad
        assert response.json()["code"] == "not_found"
    assert api.get(proof_url(event.pk, "?checkpoint=999")).status_code == 404
    for query in ("?checkpoint=x", "?checkpoint=0", "?checkpoint=", f"?checkpoint={2**63}"):
        response = api.get(proof_url(event.pk, query))
        assert response.status_code == 400, query
        assert "checkpoint" in response.json()["errors"]
    assert AuditCheckpoint.objects.count() == checkpoints


def test_a_pending_event_or_a_chain_without_trees_cannot_be_proven(api):
    [pending] = write(1)
    assert api.get(proof_url(pending.pk)).status_code == 409  # nothing sealed yet
    seal_pending()
    [later] = write(1)
    response = api.get(proof_url(later.pk))
    assert response.status_code == 409
    assert "not sealed yet" in response.json()["detail"]


def test_only_auditors_may_ask(outsider, support_agent):
    [event] = write(1)
    seal_pending()
    assert client_for(None).get(proof_url(event.pk)).status_code in (401, 403)
    for user in (outsider, support_agent):
        assert client_for(user).get(proof_url(event.pk)).status_code == 403


def test_audit_verify_rebuilds_the_tree_and_names_a_root_signed_over_other_events():
    write(6)
    seal_pending()
    checkpoint = AuditCheckpoint.objects.get()
    forged_root = "ab" * 32
    # A holder of the key signs a root that is not the tree of the events: the signature is good,
    # the root is not.
    signature = tree_head_sign(
        tree_size=checkpoint.sequence,
        root_hash=forged_root,
        head_hash=checkpoint.head_hash,
        sealed_at=checkpoint.sealed_at,
    )
    table = AuditCheckpoint._meta.db_table
    _tamper(f"UPDATE {table} SET root_hash = %s, tree_signature = %s", [forged_root, signature], table)
    report = audit_chain_verify()
    assert report.broken is not None
    assert "Merkle root signed at checkpoint 6 is not the tree" in report.broken.problem
    assert report.broken.expected == forged_root

    _tamper(f"UPDATE {table} SET tree_signature = %s", [checkpoint.signature], table)
    report = audit_chain_verify()
    assert report.broken is not None
    assert "tree head signature of checkpoint 6 does not verify" in report.broken.problem


@pytest.mark.parametrize("kept", [None, ["00" * 32]])  # a chain sealed before trees; a frontier that is wrong
def test_a_checkpoint_without_a_usable_frontier_has_the_tree_rebuilt_from_the_events(api, kept):
    write(5)
    seal_pending()
    table = AuditCheckpoint._meta.db_table
    _tamper(f"UPDATE {table} SET frontier = %s", [None if kept is None else json.dumps(kept)], table)
    events = write(3)
    seal_pending()
    assert audit_chain_verify().intact
    proof = api.get(proof_url(events[-1].pk)).json()
    assert proof["tree_size"] == 8
    assert proof_verify(proof, public_key=public_key_bytes()).ok
