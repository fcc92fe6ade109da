from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Walk the sealed audit chain in sequence order, recompute every hash and check every signed checkpoint "
        "with the public key, then check the content of the events not sealed yet. Prints "
        '"N events, chain intact, head <hash>" (with the checkpoints and the pending backlog) or names the '
        "first broken event or checkpoint; exits 1 when broken."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000, help="Rows fetched per round trip.")
        parser.add_argument(
            "--expect-head",
            default="",
            metavar="HASH",
            help="A head hash recorded earlier outside the database: fail unless the chain still contains it.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be 1 or more.")
        started = time.monotonic()
        report = audit_chain_verify(chunk_size=options["chunk_size"], expected_head=options["expect_head"])
        elapsed = time.monotonic() - started
        if report.broken is not None:
            raise CommandError(
                f"Chain broken at {report.broken.subject}: {report.broken.problem}.\n"
                f"  expected hash {report.broken.expected}\n"
                f"  found hash    {report.broken.found}\n"
                f"{report.count} events before it verify (last good head {report.head}).",
                returncode=1,
            )
        if report.seen_expected_head is False:
            raise CommandError(
                f"{report.count} events verify, but the chain does not contain the expected head "
                f"{options['expect_head']}: events were removed or the log was rewritten.",
                returncode=1,
            )
        self.stdout.write(f"{report.count} events, chain intact, head {report.head}")
        self.stdout.write(f"{report.checkpoints} checkpoint signatures verify; {report.pending} events pending")
        if options["verbosity"] > 1:
            self.stdout.write(f"verified in {elapsed:.2f} s")
