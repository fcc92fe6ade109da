"""Forms of the operator console and the run trace: they parse input; the audited services
decide and write."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.contrib.auth.models import User

from agents.eval_models import Dataset
from agents.models import Agent, AutonomyLevel, RunFeedback
from agents.tools import registry
from approvals.models import BusinessRule
from config.errors import JSONRefused, JSONSyntaxError
from config.parsing import json_loads_checked

LEVEL_CHOICES = [(value, f"{value} · {label}") for value, label in AutonomyLevel.choices]


class ReasonField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 1000)
        kwargs.setdefault("error_messages", {"required": "Say why: the change is audited."})
        super().__init__(**kwargs)


class AgentLevelForm(forms.Form):
    level = forms.TypedChoiceField(choices=LEVEL_CHOICES, coerce=int)
    tool = forms.ChoiceField(required=False, choices=[])
    reason = ReasonField()

    def __init__(self, *args: Any, agent: Agent, **kwargs: Any) -> None:
        # One form per agent on the console page: ids must not collide.
        kwargs.setdefault("auto_id", f"id_{agent.slug}_level_%s")
        super().__init__(*args, **kwargs)
        self.agent = agent
        tools = [("", "all tools (agent level)")] + [(name, name) for name in agent.tools]
        cast(forms.ChoiceField, self.fields["tool"]).choices = tools


class AgentEnabledForm(forms.Form):
    enabled = forms.TypedChoiceField(choices=[("1", "on"), ("0", "off")], coerce=lambda value: value == "1")
    reason = ReasonField()


class EmergencyStopForm(forms.Form):
    reason = ReasonField()
    confirm = forms.BooleanField(
        label="Disable every agent now",
        error_messages={"required": "Tick the box to confirm the emergency stop."},
    )


def _rule_value(text: str) -> Any:
    """A rule's value as typed: JSON when it parses (500, "x", ["a", "b"]), otherwise the text itself;
    JSON that parses but may not be stored (too deep, a NUL, a number out of range) is refused."""
    try:
        return json_loads_checked(text)
    except JSONSyntaxError:
        return text
    except JSONRefused as exc:
        raise forms.ValidationError(exc.message) from None


class BusinessRuleForm(forms.ModelForm[BusinessRule]):
    tool = forms.ChoiceField(choices=[])
    value = forms.CharField(
        max_length=2000,
        help_text='A number (500), a text, or a list for in / not_in (["example.com", "example.org"]).',
    )
    reason = ReasonField(required=False)

    class Meta:
        model = BusinessRule
        fields = ["agent", "tool", "field", "operator", "value", "effect", "note", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["tool"]).choices = [(name, name) for name in registry.names()]
        agent = cast("forms.ModelChoiceField[Agent]", self.fields["agent"])
        agent.empty_label = "every agent"
        agent.queryset = Agent.objects.order_by("slug")
        if self.instance.pk and not self.is_bound:
            self.initial["value"] = json.dumps(self.instance.value, ensure_ascii=False)

    def clean_value(self) -> Any:
        return _rule_value(self.cleaned_data["value"].strip())


class RuleDeleteForm(forms.Form):
    reason = ReasonField(required=False)


class ReviewerAssignmentForm(forms.Form):
    reviewer: forms.ModelChoiceField[User] = forms.ModelChoiceField(
        queryset=User.objects.none(), to_field_name="username"
    )
    agent: forms.ModelChoiceField[Agent] = forms.ModelChoiceField(queryset=Agent.objects.none(), to_field_name="slug")
    granted = forms.TypedChoiceField(choices=[("1", "grant"), ("0", "revoke")], coerce=lambda value: value == "1")
    reason = ReasonField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        users = User.objects.filter(is_active=True).order_by("username")
        cast("forms.ModelChoiceField[User]", self.fields["reviewer"]).queryset = users
        cast("forms.ModelChoiceField[Agent]", self.fields["agent"]).queryset = Agent.objects.order_by("slug")


class RunFeedbackForm(forms.Form):
    """Thumbs up or down on a finished run (the button pressed), and an optional correction."""

    rating = forms.ChoiceField(
        choices=RunFeedback.Rating.choices, error_messages={"required": "Choose thumbs up or thumbs down."}
    )
    correction = forms.CharField(
        required=False,
        max_length=RunFeedback.CORRECTION_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the run should have done (optional).",
    )


class EvalStartForm(forms.Form):
    """An evaluation to start: a dataset (its agent is the one evaluated) and optionally a version."""

    dataset: forms.ModelChoiceField[Dataset] = forms.ModelChoiceField(queryset=Dataset.objects.none())
    version = forms.IntegerField(required=False, min_value=1, help_text="Blank: the agent as it is now.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        datasets = Dataset.objects.select_related("agent").order_by("agent__slug", "name")
        cast("forms.ModelChoiceField[Dataset]", self.fields["dataset"]).queryset = datasets


class EvalCompareForm(forms.Form):
    a = forms.IntegerField(min_value=1)
    b = forms.IntegerField(min_value=1)


class DatasetPickForm(forms.Form):
    """Finished runs picked as cases of a dataset (made if new)."""

    name = forms.CharField(max_length=200)
    runs = forms.TypedMultipleChoiceField(coerce=int, choices=[], error_messages={"required": "Pick at least one run."})

    def __init__(self, *args: Any, run_ids: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.TypedMultipleChoiceField, self.fields["runs"]).choices = [(pk, str(pk)) for pk in run_ids]


class WhatIfForm(forms.Form):
    """A level change to replay: the agent's, or one tool's; over the last ``days`` days."""

    level = forms.TypedChoiceField(choices=LEVEL_CHOICES, coerce=int)
    tool = forms.ChoiceField(required=False, choices=[])
    days = forms.IntegerField(min_value=1, max_value=90, initial=30, required=False)
    reason = forms.CharField(max_length=1000, required=False)

    def __init__(self, *args: Any, agent: Agent, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tools = [("", "all tools (agent level)")] + [(name, name) for name in agent.tools]
        cast(forms.ChoiceField, self.fields["tool"]).choices = tools
