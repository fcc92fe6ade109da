"""Admin classes shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import Model
from django.http import HttpRequest

from config.parsing import CheckedJSONDecoder

# The admin's JSON fields parse through the one JSON parser (config/parsing.py), like the pages.
CHECKED_JSON_FIELDS: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
    models.JSONField: {"decoder": CheckedJSONDecoder}
}


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Rows written only by the services: the admin shows them and changes nothing."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
