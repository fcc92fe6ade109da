from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from audit.api import AuditEventOutputSerializer
from audit.selectors import audit_event_list, parse_moment

# The stored columns of the API's fields ("status" is derived from "sequence").
COLUMNS = [name for name in AuditEventOutputSerializer.Meta.fields if name != "status"]
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection: an
# actor or target named "=HYPERLINK(...)"); a leading apostrophe makes it text. Only CSV is
# guarded: JSON lines are read by programs and stay byte-exact, so their hashes still check.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Plain:
    """A file-like view of a command's output wrapper that adds no line endings or styles."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="", style_func=str)


def _row(event: Mapping[str, object]) -> dict[str, object]:
    return {**event, "created_at": cast(dt.datetime, event["created_at"]).isoformat()}


def csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class Command(BaseCommand):
    help = (
        "Stream audit events in id order as JSON lines or CSV. --since is inclusive, --until exclusive; "
        "a date means its midnight (UTC). The hashes are included so the export can be checked. "
        "In CSV, a cell a spreadsheet would run as a formula (= + - @ tab CR) gets a leading apostrophe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="ISO 8601 date or datetime, e.g. 2026-11-24.")
        parser.add_argument("--until", help="ISO 8601 date or datetime (exclusive).")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", metavar="FILE", help="Write here instead of standard output.")
        parser.add_argument("--chunk-size", type=int, default=2000, help="Rows fetched per round trip.")

    def handle(self, *args: Any, **options: Any) -> None:
        since = self._moment("--since", options["since"])
        until = self._moment("--until", options["until"]) if options["until"] else None
        if until is not None and until <= since:
            raise CommandError("--until must be later than --since.")
        events = audit_event_list(since=since, until=until).order_by("id")
        show_progress = self.stderr.isatty()
        total = events.count() if show_progress else 0
        rows = events.values(*COLUMNS).iterator(chunk_size=options["chunk_size"])

        if options["output"]:
            try:
                with open(options["output"], "w", encoding="utf-8", newline="") as out:
                    written = self._write(rows, out, options["format"], total, show_progress)
            except OSError as exc:
                raise CommandError(f"Cannot write {options['output']}: {exc}") from None
        else:
            try:
                written = self._write(rows, _Plain(self.stdout), options["format"], total, show_progress)
            except BrokenPipeError:
                # The reader went away (| head): stop quietly, like other command-line tools.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise SystemExit(1) from None
        if show_progress:
            self.stderr.write(f"\nexported {written} events", style_func=str)

    def _moment(self, option: str, value: str) -> dt.datetime:
        try:
            return parse_moment(value)
        except ValueError as exc:
            raise CommandError(f"{option}: {exc}") from None

    def _write(
        self, rows: Iterable[Mapping[str, object]], out: TextIO | _Plain, fmt: str, total: int, show_progress: bool
    ) -> int:
        # RFC 4180 line ends: the writer quotes a cell only if it holds a character of the line
        # terminator, so with "\n" alone a carriage return in a name went out unquoted and broke
        # every reader.
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n") if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        written = 0
        for event in rows:
            row = _row(event)
            if writer is not None:
                cells = {**row, "data": json.dumps(row["data"], sort_keys=True, ensure_ascii=False)}
                writer.writerow({name: csv_cell(value) for name, value in cells.items()})
            else:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
            if show_progress and (written % 500 == 0 or written == total):
                self._progress(written, total)
        return written

    def _progress(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        percent = 100 * done // total if total else 100
        self.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {percent}%", ending="", style_func=str
        )
