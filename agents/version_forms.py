"""Forms of the versions page: they parse input; agents.versions and agents.rollout decide and write."""

from __future__ import annotations

from typing import Any

from django import forms

from agents.forms import ReasonField
from config.errors import JSONRefused
from config.parsing import json_loads_checked

# A behaviour is a few kilobytes (a playbook, a prompt); more is refused before it is parsed.
BEHAVIOUR_MAX_CHARS = 64_000


class VersionChoiceForm(forms.Form):
    """Roll back to a version, or start a canary with it (and a share)."""

    version = forms.IntegerField(min_value=1, max_value=2**31 - 1)
    reason = ReasonField()


class CanaryStartForm(VersionChoiceForm):
    share = forms.IntegerField(min_value=0, max_value=100, help_text="Per cent of new runs, 0-100.")


class CanaryDecisionForm(forms.Form):
    """Promote the candidate, or roll it back."""

    reason = ReasonField()


class VersionCandidateForm(forms.Form):
    """A new version made as a candidate: its behaviour as JSON (fields left out keep the current value)."""

    behaviour = forms.CharField(widget=forms.Textarea(attrs={"rows": 16}), max_length=BEHAVIOUR_MAX_CHARS)
    reason = ReasonField()

    def clean_behaviour(self) -> Any:
        try:
            value = json_loads_checked(self.cleaned_data["behaviour"])
        except JSONRefused as exc:
            raise forms.ValidationError(exc.message) from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The behaviour is a JSON object of behaviour fields.")
        return value
