from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audit.sealer import SealRefused, seal_forever, seal_pending


class Command(BaseCommand):
    help = (
        "Seal pending audit events: give them their place in the hash chain, in id order, and sign a "
        "checkpoint. With --loop, keep sealing every --interval seconds until stopped (one sealer works "
        "at a time; others wait their turn)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep sealing until SIGTERM or Ctrl-C.")
        parser.add_argument("--interval", type=float, default=0.2, help="Seconds between passes (with --loop).")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["loop"]:
            try:
                sealed = seal_pending()
            except SealRefused as exc:
                self.stderr.write(str(exc))
                raise SystemExit(1) from None
            self.stdout.write(f"{sealed} events sealed")
            return
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        self.stdout.write(f"sealing every {options['interval']} s")
        seal_forever(interval=max(options["interval"], 0.01), stop=lambda: self.stopping)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
