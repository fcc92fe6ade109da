"""100,000 waiting runs, each with its steps, its pending tool call and its approval request,
copied in SQL from one run the runtime brought to its checkpoint: INSERT ... SELECT over
generate_series on PostgreSQL, over a recursive CTE on SQLite; never the ORM row by row.

Every column is copied from the template row except the keys that tie the copies together,
so the fill follows the schema as it changes, and ``created_at``: the runs are spread evenly over
the last 24 hours (their steps, call and approval at the run's time), every run inside the
dashboard's 24-hour window, the worst case, and most of them in hours that have closed, as a day
of traffic would leave them.
"""

from __future__ import annotations

from django.db import connection, transaction

from agents.models import Run, Step, ToolCall
from approvals.models import ApprovalRequest


def _columns(table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [column.name for column in connection.introspection.get_table_description(cursor, table)]


def _clone(table: str, template_id: int, *, source: str, overrides: dict[str, str], params: list[int]) -> None:
    """INSERT a copy of the template row for each row of ``source`` (aliased src)."""
    quote = connection.ops.quote_name
    columns = [name for name in _columns(table) if name != "id"]
    values = ", ".join(overrides.get(name, f"tpl.{quote(name)}") for name in columns)
    prefix = ""
    if connection.vendor == "sqlite" and source.startswith("series"):
        prefix = "WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < %s) "
    # Table and column names come from the schema, the sources from this module: no outside text.
    names = ", ".join(quote(c) for c in columns)
    sql = f"{prefix}INSERT INTO {quote(table)} ({names}) SELECT {values} FROM {quote(table)} tpl, {source} WHERE tpl.id = %s"  # noqa: S608, E501
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, template_id])


def _uuid_sql() -> str:
    # Django keeps a UUIDField as 32 hex characters on SQLite and as uuid on PostgreSQL.
    return "lower(hex(randomblob(16)))" if connection.vendor == "sqlite" else "gen_random_uuid()"


def _hours_before(base: str, hours: str) -> str:
    """SQL for ``base`` moved back by ``hours`` (an integer expression) hours."""
    if connection.vendor == "sqlite":
        # As Django stores it: "YYYY-MM-DD HH:MM:SS.fff" compares as text with its parameters.
        return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {base}, '-' || ({hours}) || ' hours')"
    return f"{base} - ({hours}) * interval '1 hour'"


def waiting_runs_fill(template: ApprovalRequest, *, count: int) -> int:
    """Copies of ``template``'s run, steps, pending call and approval; returns the runs added."""
    last_run = Run.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_call = ToolCall.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    new_runs = "(SELECT id AS run_id, created_at AS run_created FROM agents_run WHERE id > %s ORDER BY id) src"
    # The first 24th of the copies 23 hours back, ..., the last 24th in the template's hour: rows of
    # an hour lie together, in id order, as traffic writes them.
    spread = {"created_at": _hours_before("tpl.created_at", f"23 - (src.n - 1) * 24 / {int(count)}")}
    with transaction.atomic():
        if connection.vendor == "sqlite":
            _clone(Run._meta.db_table, template.run_id, source="series src", overrides=spread, params=[count])
        else:
            _clone(
                Run._meta.db_table,
                template.run_id,
                source="generate_series(1, %s) AS src(n)",
                overrides=spread,
                params=[count],
            )
        of_run = {"run_id": "src.run_id", "created_at": "src.run_created"}
        for step_id in Step.objects.filter(run_id=template.run_id).values_list("pk", flat=True):
            _clone(Step._meta.db_table, step_id, source=new_runs, overrides=of_run, params=[last_run])
        _clone(
            ToolCall._meta.db_table,
            template.tool_call_id,
            source=new_runs,
            overrides={**of_run, "idempotency_key": _uuid_sql()},
            params=[last_run],
        )
        _clone(
            ApprovalRequest._meta.db_table,
            template.pk,
            source="(SELECT id AS tool_call_id, run_id, created_at AS run_created FROM agents_toolcall"
            " WHERE id > %s ORDER BY id) src",
            overrides={**of_run, "tool_call_id": "src.tool_call_id"},
            params=[last_call],
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Plans for the new sizes and the new pages marked all-visible: what autovacuum does soon
            # after an insert this large (PostgreSQL 13 and later vacuum after inserts too).
            cursor.execute("VACUUM ANALYZE")
    return Run.objects.filter(pk__gt=last_run).count()
