from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from agents.feedback_cases import feedback_case_runs, feedback_cases
from agents.models import Agent
from audit.selectors import parse_moment
from audit.types import JSONObject


class _Plain:
    """A file-like view of a command's output wrapper that adds no line endings or styles."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="", style_func=str)

    def flush(self) -> None:
        self.wrapper.flush()


class Command(BaseCommand):
    help = (
        "Write an agent's finished runs that got feedback or a reviewer's edit as evaluation cases, one "
        "JSON object a line: the input as the model saw it (placeholders, never the real values), the "
        "steps, the calls as proposed and as decided, the feedback, and the expected calls and outcome. "
        "A progress bar goes to standard error when it is a terminal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, metavar="SLUG", help="The agent whose runs to export.")
        parser.add_argument("--format", choices=["jsonl"], default="jsonl", help="jsonl (the only one for now).")
        parser.add_argument("--output", metavar="FILE", help="Write here instead of standard output.")
        parser.add_argument("--since", help="Only runs created at or after this ISO 8601 date or datetime.")
        parser.add_argument("--chunk-size", type=int, default=200, help="Runs fetched per round trip.")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = self._agent(options["agent"])
        since = None
        if options["since"]:
            try:
                since = parse_moment(options["since"])
            except ValueError as exc:
                raise CommandError(f"--since: {exc}") from None
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        runs = feedback_case_runs(agent=agent, since=since)
        show_progress = self.stderr.isatty()
        # The COUNT costs a query: only a person watching the bar needs the total.
        total = runs.count() if show_progress else None
        cases = feedback_cases(runs=runs, chunk_size=options["chunk_size"])
        if options["output"]:
            try:
                with open(options["output"], "w", encoding="utf-8") as out:
                    written = self._write(cases, out, total=total, show_progress=show_progress)
            except OSError as exc:
                raise CommandError(f"Cannot write {options['output']}: {exc}") from None
        else:
            try:
                written = self._write(cases, _Plain(self.stdout), total=total, show_progress=show_progress)
            except BrokenPipeError:
                # The reader went away (| head): stop quietly, like other command-line tools.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise SystemExit(1) from None
        if show_progress:
            self.stderr.write(f"exported {written} cases of {agent.slug}", style_func=str)

    def _agent(self, slug: str) -> Agent:
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None:
            known = ", ".join(Agent.objects.order_by("slug").values_list("slug", flat=True)) or "none"
            raise CommandError(f"Unknown agent {slug[:100]!r}. Agents: {known}.")
        return agent

    def _write(
        self, cases: Iterable[JSONObject], out: TextIO | _Plain, *, total: int | None, show_progress: bool
    ) -> int:
        written = 0
        with tqdm(
            total=total, unit="run", desc="export_feedback", file=_Plain(self.stderr), disable=not show_progress
        ) as bar:
            for case in cases:
                out.write(json.dumps(case, ensure_ascii=False) + "\n")
                written += 1
                bar.update(1)
        return written
