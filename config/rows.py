"""New rows of a model in one INSERT, without the ORM's statement building.

For the few writes made at every step of a run, where building the statement with the ORM cost
more CPU than the database took to run it. Each field converts its own value for the database
(``get_db_prep_save``, after ``pre_save``: defaults and ``auto_now`` as ``save()`` gives them);
no ``save()`` override runs and no signal is sent, so it is only for models with neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.db.models import Model


def rows_insert(rows: Sequence[Model], *, counted: tuple[str, list[Any]] | None = None) -> tuple[Any, ...]:
    """INSERT ``rows`` (new, all of one model with an automatic id) and set their ids.

    ``counted``: an UPDATE ... RETURNING (PostgreSQL only), run in the same statement as a
    data-modifying WITH (PostgreSQL runs it exactly once, whatever reads it); what it returns
    (one row) is returned. One round trip instead of two for a write and its counter."""
    if not rows:
        return ()
    meta = rows[0]._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in rows for field in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(rows))} "  # noqa: S608 - the model's own table
        f"RETURNING {quote(str(meta.pk.column))}"
    )
    if counted is not None:
        if connection.vendor != "postgresql":
            raise NotImplementedError("a counted INSERT is a PostgreSQL statement")
        update, update_params = counted
        sql = f"WITH counted AS ({update}) {sql}, (SELECT row_to_json(counted) FROM counted)"  # noqa: S608 - the caller's statement
        params = [*update_params, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    # In the order of the rows: PostgreSQL and SQLite (3.35+) return them so for one
    # INSERT ... VALUES, which Django's own bulk_create relies on.
    for obj, (row_id, *_) in zip(rows, returned, strict=True):
        obj.pk = row_id
        obj._state.adding = False
        obj._state.db = connection.alias
    return tuple(returned[0][1:])
