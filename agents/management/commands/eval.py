from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from agents.eval_models import Dataset, EvalCaseResult
from agents.evaluation.metrics import METRICS
from agents.evaluation.runs import eval_run_create, eval_run_execute
from agents.management.commands.export_feedback import _Plain
from agents.models import Agent
from config.errors import DomainError


class Command(BaseCommand):
    help = (
        "Evaluate an agent (or one of its versions) on a dataset in evaluation mode: read-only tools run, "
        "no other tool ever executes; each proposal's verdict is recorded and compared with the expected "
        "calls. Prints each failing case and the aggregates; a progress bar on a terminal."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the agent version here, not Django's: ours replaces the base option.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, metavar="SLUG")
        parser.add_argument("--dataset", required=True, metavar="NAME")
        parser.add_argument("--version", type=int, metavar="N", help="An agent version; default: the agent now.")
        parser.add_argument(
            "--as", dest="as_user", metavar="USERNAME", help="Whose permissions the policy checks; default: the owner."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"Unknown agent {options['agent'][:100]!r}.")
        dataset = Dataset.objects.filter(agent=agent, name=options["dataset"]).first()
        if dataset is None:
            names = ", ".join(agent.datasets.values_list("name", flat=True)) or "none"
            raise CommandError(f"{agent.slug} has no dataset {options['dataset'][:100]!r}. Datasets: {names}.")
        user = agent.owner
        if options["as_user"]:
            user = get_user_model().objects.filter(username=options["as_user"]).first()
            if user is None:
                raise CommandError(f"Unknown user {options['as_user'][:100]!r}.")
        if user is None:
            raise CommandError(f"{agent.slug} has no owner: say whose permissions to check with --as.")
        try:
            eval_run = eval_run_create(
                agent=agent, dataset=dataset, user=user, version_number=options["version"], enqueue=False
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        failures: list[EvalCaseResult] = []
        with tqdm(
            total=eval_run.cases_total,
            unit="case",
            desc="eval",
            file=_Plain(self.stderr),
            disable=not self.stderr.isatty(),
        ) as bar:

            def advance(result: EvalCaseResult) -> None:
                bar.update(1)
                if not result.passed:
                    failures.append(result)

            finished = eval_run_execute(eval_run_id=eval_run.pk, progress=advance)
        if finished is None:
            raise CommandError(f"Evaluation {eval_run.pk} was taken by another worker.")
        for result in failures:
            self.stdout.write(f"FAIL case {result.case_id} {result.case.name}: {result.reason}".replace("  ", " "))
        summary = finished.aggregates
        self.stdout.write(f"evaluation {finished.pk}: {summary['passed']} of {summary['cases']} cases passed")
        for key, label, fmt in METRICS:
            self.stdout.write(f"  {label}: {fmt(summary[key])}")
