"""Forms of the reviewer inbox: they parse input; the services decide and write."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms

from approvals.models import BULK_VERDICTS, DecisionVerdict
from config.errors import JSONRefused
from config.pages import field_errors
from config.parsing import INT64_MAX, json_loads_checked

VERDICT_LABELS: dict[str, str] = {
    DecisionVerdict.APPROVE: "Approve",
    DecisionVerdict.EDIT: "Approve with edits",
    DecisionVerdict.REJECT: "Reject",
    DecisionVerdict.RESPOND: "Send answer",
    DecisionVerdict.DONE: "Done",
    DecisionVerdict.DISMISS: "Dismiss",
    DecisionVerdict.OK: "OK",
    DecisionVerdict.FLAG: "Flag incident",
}


# --- Deciding ------------------------------------------------------------------------------


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(choices=list(VERDICT_LABELS.items()))
    arguments_hash = forms.RegexField(regex=r"^[0-9a-f]{64}$", required=False)
    comment = forms.CharField(max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    edit_mode = forms.ChoiceField(choices=[("fields", "fields"), ("json", "json")], required=False)
    arguments_json = forms.CharField(
        required=False, max_length=200_000, widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"})
    )


def _schema_types(spec: dict[str, Any]) -> tuple[str, bool]:
    """The JSON type of a property and whether null is allowed (pydantic writes ``X | None`` as anyOf)."""
    options = spec.get("anyOf")
    if options:
        types = [option.get("type") for option in options]
        nullable = "null" in types
        rest = [option for option in options if option.get("type") != "null"]
        if len(rest) == 1:
            return str(rest[0].get("type", "")), nullable
        return "", nullable
    kind = spec.get("type", "")
    if isinstance(kind, list):
        nullable = "null" in kind
        others = [k for k in kind if k != "null"]
        return (others[0] if len(others) == 1 else ""), nullable
    return str(kind), False


def _schema_bounds(spec: dict[str, Any]) -> dict[str, Any]:
    for option in spec.get("anyOf", []):
        if option.get("type") != "null":
            return {**option, **{k: v for k, v in spec.items() if k != "anyOf"}}
    return spec


class ArgumentsForm(forms.Form):
    """Tool arguments as a form generated from the tool's JSON schema.

    The fields only convert text to JSON types; the tool's schema stays the one judge of
    validity (``approval_request_decide`` re-validates and answers with field errors).
    """

    prefix = "arg"

    def __init__(self, *args: Any, schema: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = schema
        self.json_fields: set[str] = set()
        self.nullable: set[str] = set()
        required = set(schema.get("required", []))
        for name, raw in (schema.get("properties") or {}).items():
            spec = _schema_bounds(raw)
            kind, nullable = _schema_types(raw)
            if nullable:
                self.nullable.add(name)
            label = raw.get("title") or name
            help_text = raw.get("description", "")
            is_required = name in required and not nullable
            field: forms.Field
            attrs: dict[str, Any] = {}
            if "enum" in spec:
                choices = [(json.dumps(value), str(value)) for value in spec["enum"]]
                if not is_required:
                    choices = [("", "—"), *choices]
                field = forms.TypedChoiceField(
                    choices=choices, coerce=json.loads, empty_value=None, required=is_required
                )
            elif kind == "integer":
                for key, attr in (("minimum", "min"), ("maximum", "max")):
                    if key in spec:
                        attrs[attr] = spec[key]
                field = forms.IntegerField(required=is_required, widget=forms.NumberInput(attrs=attrs))
            elif kind == "number":
                attrs["step"] = "any"
                for key, attr in (("minimum", "min"), ("maximum", "max")):
                    if key in spec:
                        attrs[attr] = spec[key]
                field = forms.FloatField(required=is_required, widget=forms.NumberInput(attrs=attrs))
            elif kind == "boolean":
                field = forms.BooleanField(required=False)
            elif kind == "string":
                long_text = spec.get("maxLength", 10_000) > 300
                widget = forms.Textarea(attrs={"rows": 4}) if long_text else forms.TextInput()
                field = forms.CharField(required=is_required, strip=False, widget=widget)
            else:
                self.json_fields.add(name)
                field = forms.CharField(
                    required=is_required, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})
                )
            field.label = label
            field.help_text = help_text
            field.widget.attrs["data-arg"] = name
            if nullable:
                field.widget.attrs["data-nullable"] = "1"
            if "enum" in spec:
                field.widget.attrs["data-type"] = "enum"
            else:
                field.widget.attrs["data-type"] = "json" if name in self.json_fields else (kind or "string")
            self.fields[name] = field

    @classmethod
    def initial_from(cls, arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
        initial: dict[str, Any] = {}
        for name, raw in (schema.get("properties") or {}).items():
            if name not in arguments:
                continue
            value = arguments[name]
            spec = _schema_bounds(raw)
            kind, _ = _schema_types(raw)
            if "enum" in spec:
                initial[name] = json.dumps(value) if value is not None else ""
            elif kind in ("integer", "number", "boolean", "string"):
                initial[name] = value
            else:
                initial[name] = json.dumps(value, indent=2, ensure_ascii=False)
        return initial

    def arguments(self) -> dict[str, Any]:
        """The edited arguments as JSON values (call after ``is_valid``)."""
        values: dict[str, Any] = {}
        for name in self.fields:
            value = self.cleaned_data.get(name)
            if name in self.json_fields:
                if value in ("", None):
                    continue
                try:
                    value = json_loads_checked(value)
                except JSONRefused as exc:
                    self.add_error(name, json_refusal_text(exc))
                    continue
            if value in ("", None) and name in self.nullable:
                value = None
            elif value is None:
                continue  # left empty: the tool's default applies
            values[name] = value
        return values


def arguments_from_json(text: str) -> Any:
    """The JSON edit mode's arguments, through the one JSON parser (raises JSONRefused)."""
    return json_loads_checked(text)


def json_refusal_text(exc: JSONRefused) -> str:
    """A refusal as one sentence for the page: what, and where in the JSON."""
    where = "; ".join(f"{path}: {messages[0]}" for path, messages in field_errors(exc.details).items())
    return f"{exc.message} ({where})" if where else exc.message


class BulkDecisionForm(forms.Form):
    ids = forms.TypedMultipleChoiceField(coerce=int, choices=[], error_messages={"required": "Select some items."})
    verdict = forms.ChoiceField(choices=[(v, VERDICT_LABELS[v]) for v in BULK_VERDICTS])
    comment = forms.CharField(max_length=5000, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any positive id is acceptable here; which ones the user may decide is the selector's job.
        raw = self.data.getlist("ids") if hasattr(self.data, "getlist") else self.data.get("ids", [])
        choices = [(value, value) for value in raw if _is_id(value)]
        cast(forms.ChoiceField, self.fields["ids"]).choices = choices[:200]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("verdict") == DecisionVerdict.REJECT and not (data.get("comment") or "").strip():
            self.add_error("comment", "A rejection needs a reason.")
        return data


def _is_id(value: Any) -> bool:
    # ASCII digits only (str.isdigit() takes "²" too), within the id column's range.
    text = str(value)
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit() and 0 < int(text) <= INT64_MAX
