"""Forms of the cohort pages: a new cohort (patients picked, filtered or listed) and a severity CSV import."""

from __future__ import annotations

from django import forms

from analysis.cohorts import parse_identifiers, patients_matching, resolve_identifiers
from patients.models import Cohort, Patient

from . import cohort_queries

MAX_CSV_BYTES = 2 * 1024 * 1024


def _read_text(upload) -> str:
    """The text of an uploaded CSV (UTF-8, with or without BOM); ValidationError when it is not text."""
    if upload.size > MAX_CSV_BYTES:
        raise forms.ValidationError(f"The file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB.")
    try:
        return upload.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise forms.ValidationError("The file is not UTF-8 text; save it as CSV (UTF-8).") from None


class CohortForm(forms.Form):
    """A new cohort of one team's patients: ticked in the list, matched by a filter, or listed by identifier."""

    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=200, strip=True)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    patients = forms.ModelMultipleChoiceField(queryset=None, required=False, widget=forms.CheckboxSelectMultiple)
    contains = forms.CharField(
        required=False, max_length=64, label="Add every patient whose identifier contains", strip=True
    )
    identifiers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Identifiers",
        help_text="One per line, or separated by commas; a CSV's first column works too.",
    )
    identifiers_file = forms.FileField(required=False, label="…or a CSV file of identifiers")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        teams = cohort_queries.admin_teams(user)
        self.fields["team"].queryset = teams
        self.fields["team"].error_messages["invalid_choice"] = "Choose one of the teams you administer."
        self.fields["patients"].queryset = (
            Patient.objects.filter(team__in=teams).select_related("team").order_by("team__name", "identifier")
        )
        self.fields["patients"].label_from_instance = lambda p: f"{p.identifier} ({p.team.name})"
        self.members: list[Patient] = []

    def clean(self):
        data = super().clean()
        team = data.get("team")
        if team is None:
            return data
        name = data.get("name")
        if name and Cohort.objects.filter(team=team, name=name).exists():
            self.add_error("name", f"{team.name} already has a cohort called “{name}”.")
        identifiers = parse_identifiers(data.get("identifiers") or "")
        upload = data.get("identifiers_file")
        if upload:
            try:
                listed = parse_identifiers(_read_text(upload), first_column=True)
            except forms.ValidationError as exc:
                self.add_error("identifiers_file", exc)
            else:
                identifiers += [i for i in listed if i not in identifiers]
        found, missing = resolve_identifiers(team, identifiers)
        if missing:
            self.add_error("identifiers", [f"{identifier}: {reason}." for identifier, reason in missing])
        picked = list(data.get("patients") or [])
        others = [p.identifier for p in picked if p.team_id != team.pk]
        if others:
            self.add_error("patients", f"Not patients of {team.name}: {', '.join(others)}.")
        matched = patients_matching(team, data.get("contains") or "")
        if data.get("contains") and not matched:
            self.add_error("contains", f"No patient of {team.name} has an identifier containing “{data['contains']}”.")
        members = {p.pk: p for p in [*picked, *matched, *found] if p.team_id == team.pk}
        if not members and not self.errors:
            raise forms.ValidationError("Pick at least one patient: tick them, give a filter, or list identifiers.")
        self.members = list(members.values())
        return data


class SeverityImportForm(forms.Form):
    """A CSV of clinical severities: patient, accession or study_date, severity."""

    file = forms.FileField(label="CSV file")

    def clean_file(self):
        return _read_text(self.cleaned_data["file"])
