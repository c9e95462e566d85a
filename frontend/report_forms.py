"""Forms of the report pages: CSV import, one report typed in, a lexicon phrase."""

from __future__ import annotations

from django import forms

from patients.choices import PhraseLabel
from patients.reports import DEFAULT_LANGUAGE

from . import report_queries

LANGUAGE_HELP = "A short language code such as en or de; the team's phrases of that language are used."


class ReportImportForm(forms.Form):
    """A CSV file of reports for one of the user's teams (clinician or admin)."""

    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    file = forms.FileField(error_messages={"required": "Choose a CSV file of reports."})
    language = forms.CharField(max_length=8, initial=DEFAULT_LANGUAGE, help_text=LANGUAGE_HELP)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = report_queries.import_teams(user)
        self.fields["team"].error_messages["invalid_choice"] = (
            "Choose one of your teams where you are a clinician or team admin."
        )

    def clean_language(self) -> str:
        value = self.cleaned_data["language"].strip().lower()
        if not value.replace("-", "").isalpha():
            raise forms.ValidationError("Write a language code such as en or de.")
        return value


class ReportForm(forms.Form):
    """One report typed or pasted in for one study."""

    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        strip=True,
        error_messages={"required": "Write or paste the report text."},
    )


class PhraseForm(forms.Form):
    """A phrase added to a team's lexicon."""

    phrase = forms.CharField(max_length=200, strip=True)
    label = forms.ChoiceField(choices=PhraseLabel.choices)
    language = forms.CharField(max_length=8, initial=DEFAULT_LANGUAGE, help_text=LANGUAGE_HELP)
