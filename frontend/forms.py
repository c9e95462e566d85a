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
    """What a team admin may change about the team.

    A post without one of the progression tolerances keeps its current value (forms that show only
    the other settings stay valid).
    """

    KEEP_WHEN_ABSENT = ("poi_tolerance_pp", "ihu_tolerance_hu", "corona_tolerance")

    def __init__(self, data=None, *args, **kwargs):
        instance = kwargs.get("instance")
        if data is not None and instance is not None:
            data = data.copy()
            for name in self.KEEP_WHEN_ABSENT:
                if name not in data:
                    data[name] = getattr(instance, name)
        super().__init__(data, *args, **kwargs)

    class Meta:
        model = Team
        fields = ["suspected_ratio_threshold", "poi_tolerance_pp", "ihu_tolerance_hu", "corona_tolerance"]
        labels = {
            "suspected_ratio_threshold": "Flag a scan as suspected when this share of its lung slices is abnormal",
            "poi_tolerance_pp": "Stable when POI changes by at most (percentage points)",
            "ihu_tolerance_hu": "Stable when iHU changes by at most (HU)",
            "corona_tolerance": "Stable when the corona score changes by at most (share of the earlier score)",
        }
