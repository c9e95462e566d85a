"""DRF serializers for patients, studies, series and uploads; every one lists its fields explicitly."""

from __future__ import annotations

from rest_framework import serializers

from .models import Patient, RadiologyReport, Series, Study, Upload


class PatientSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Patient
        fields = ["id", "team", "identifier", "sex", "birth_year", "created"]
        read_only_fields = fields


class StudySerializer(serializers.ModelSerializer):
    patient_identifier = serializers.CharField(source="patient.identifier", read_only=True)

    class Meta:
        model = Study
        fields = [
            "id",
            "patient",
            "patient_identifier",
            "study_instance_uid",
            "accession_number",
            "study_date",
            "description",
            "created",
        ]
        read_only_fields = fields


class SeriesSerializer(serializers.ModelSerializer):
    # The stored volume path stays server-side; clients reach images through permission-checked views.
    class Meta:
        model = Series
        fields = [
            "id",
            "study",
            "series_instance_uid",
            "modality",
            "description",
            "series_number",
            "source",
            "rows",
            "columns",
            "slice_count",
            "pixel_spacing_row",
            "pixel_spacing_col",
            "slice_spacing",
            "slice_thickness",
            "orientation",
            "origin",
            "status",
            "status_message",
            "created",
        ]
        read_only_fields = fields


class UploadSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Upload
        fields = ["id", "team", "user", "channel", "created", "file_count", "accepted_count", "refused_count", "report"]
        read_only_fields = fields


class UploadRequestSerializer(serializers.Serializer):
    """What a client posts: the files, the team (a slug; optional for a user of one team) and a patient."""

    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        allow_empty=False,
        error_messages={"empty": "Send at least one file: a .zip, .dcm files or a .nii/.nii.gz volume."},
    )
    team = serializers.SlugField(required=False, allow_blank=True, max_length=60)
    patient_identifier = serializers.CharField(required=False, allow_blank=True, max_length=64, trim_whitespace=True)


class RadiologyReportSerializer(serializers.ModelSerializer):
    """A report with the label, phrase and span the lexicon read from it (all read-only but study and text)."""

    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = RadiologyReport
        fields = [
            "id",
            "study",
            "text",
            "language",
            "report_date",
            "source",
            "created_by",
            "created",
            "label",
            "phrase",
            "span_start",
            "span_end",
        ]
        read_only_fields = ["id", "source", "created_by", "created", "label", "phrase", "span_start", "span_end"]


class ReportImportRequestSerializer(serializers.Serializer):
    """A CSV file of reports, the team (a slug; optional for a user of one team), and whether to only preview."""

    file = serializers.FileField(use_url=False)
    team = serializers.SlugField(required=False, allow_blank=True, max_length=60)
    language = serializers.RegexField(r"^[A-Za-z-]{1,8}$", required=False, default="en")
    dry_run = serializers.BooleanField(required=False, default=False)
