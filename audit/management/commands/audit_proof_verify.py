from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.proofs import proof_verify


class Command(BaseCommand):
    help = (
        "Check an audit event's inclusion proof (the JSON of GET /api/v1/audit/events/{id}/proof/) with the "
        "public key alone: the event's hash, its audit path to the checkpoint's Merkle root (RFC 6962) and the "
        "checkpoint's tree head signature. Reads no database. Exits 1 when the proof does not hold."
    )
    requires_system_checks: list[str] = []  # standalone: no database, no configured key

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("proof", help="A file holding the proof's JSON, or - for standard input.")
        parser.add_argument(
            "--public-key",
            required=True,
            metavar="BASE64",
            help="The log's Ed25519 public key (base64 of its 32 raw bytes), as published and kept elsewhere.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            public_key = base64.b64decode(options["public_key"], validate=True)
        except (binascii.Error, ValueError):
            raise CommandError("--public-key is not base64.") from None
        if len(public_key) != 32:
            raise CommandError("--public-key must be base64 of 32 bytes (a raw Ed25519 public key).")
        source = options["proof"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
            document = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"Cannot read the proof: {exc}") from None
        if not isinstance(document, dict):
            raise CommandError("The proof is not a JSON object.")
        check = proof_verify(document, public_key=public_key)
        if not check.ok:
            raise CommandError(f"Proof does not hold: {check.problem}.", returncode=1)
        event = document["event"]
        self.stdout.write(
            f"event {event['id']} is number {event['sequence']} of the {document['tree_size']} events signed at "
            f"checkpoint {document['checkpoint']['sequence']} (root {document['root_hash']})"
        )
