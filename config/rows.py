"""New rows of a model in one INSERT, without the ORM's statement building.

For the few writes made at every step of a run, where building the statement with the ORM cost
more CPU than the database took to run it. Each field converts its own value for the database
(``get_db_prep_save``, after ``pre_save``: defaults and ``auto_now`` as ``save()`` gives them);
no ``save()`` override runs and no signal is sent, so it is only for models with neither.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model


def rows_insert(rows: Sequence[Model]) -> None:
    """INSERT ``rows`` (new, all of one model with an automatic id) and set their ids."""
    if not rows:
        return
    meta = rows[0]._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in rows for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(rows))} "  # noqa: S608 - the model's own table
            f"RETURNING {quote(str(meta.pk.column))}",
            params,
        )
        ids = [row_id for (row_id,) in cursor.fetchall()]
    # In the order of the rows: PostgreSQL and SQLite (3.35+) return them so for one
    # INSERT ... VALUES, which Django's own bulk_create relies on.
    for obj, row_id in zip(rows, ids, strict=True):
        obj.pk = row_id
        obj._state.adding = False
        obj._state.db = connection.alias
