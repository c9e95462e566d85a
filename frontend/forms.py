"""Forms for the pages: the upload form (team, optional patient identifier, files) and team settings."""

from __future__ import annotations

from django import forms

from patients.models import Team

from . import queries


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (a set of .dcm files, a folder's contents, or one .zip)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        items = [item for item in data if item] if isinstance(data, list | tuple) else ([data] if data else [])
        if not items:
            if self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return []
        return [super(MultipleFileField, self).clean(item, initial) for item in items]


class UploadForm(forms.Form):
    """Where an upload goes; the user may choose only teams where they are clinician or admin."""

    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    patient_identifier = forms.CharField(
        max_length=64,
        required=False,
        strip=True,
        help_text="Needed for NIfTI files, which carry no patient ID; for DICOM files it replaces their PatientID.",
    )
    files = MultipleFileField(
        error_messages={"required": "Choose at least one file: a .zip, .dcm files, a folder, or a .nii.gz."},
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = queries.upload_teams(user)
        self.fields["team"].error_messages["invalid_choice"] = (
            "Choose one of your teams where you are a clinician or team admin."
        )


class TeamSettingsForm(forms.ModelForm):
    """What a team admin may change about the team."""

    class Meta:
        model = Team
        fields = ["suspected_ratio_threshold"]
        labels = {
            "suspected_ratio_threshold": "Flag a scan as suspected when this share of its lung slices is abnormal"
        }
