from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.evaluation.datasets import MAX_FILE_BYTES, cases_from_jsonl, cases_from_yaml, dataset_import
from agents.models import Agent
from config.errors import DomainError


class Command(BaseCommand):
    help = (
        "Add evaluation cases to an agent's dataset (made if new) from a YAML file or from "
        "export_feedback's JSONL (by the file's extension, or --format). A file with a bad case adds none."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--agent", required=True, metavar="SLUG")
        parser.add_argument("--name", required=True, help="The dataset's name.")
        parser.add_argument("--format", choices=["yaml", "jsonl"], help="Default: from the extension.")
        parser.add_argument("--user", metavar="USERNAME", help="Recorded as the dataset's creator.")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"Unknown agent {options['agent'][:100]!r}.")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"Unknown user {options['user'][:100]!r}.")
        path = Path(options["file"])
        kind = options["format"] or ("jsonl" if path.suffix in (".jsonl", ".json") else "yaml")
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise CommandError(f"{path} is over {MAX_FILE_BYTES // (1024 * 1024)} MB.")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            cases = cases_from_jsonl(text) if kind == "jsonl" else cases_from_yaml(text)
            dataset = dataset_import(agent=agent, name=options["name"], cases=cases, user=user)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        total = dataset.cases.count()
        self.stdout.write(f"added {len(cases)} cases to dataset {dataset.name!r} of {agent.slug} ({total} in all)")
