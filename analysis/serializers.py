"""DRF serializers for analysis runs; every one lists its fields explicitly.

The list view carries what a polling page needs (status, stage, progress, error) and the results
with their regions and opacities; per-slice metrics, timings and model records come with one run.
Tracebacks and file paths stay server-side (the admin shows tracebacks).
"""

from __future__ import annotations

from rest_framework import serializers

from patients.models import Cohort

from .choices import RunStatus
from .models import AnalysisRun, Opacity, RegionMeasurement, SeverityModel
from .pipeline.result import REGION_SCHEME
from .runs import is_suspected, relative_corona_score
from .severity import active_model, predict


class RegionMeasurementSerializer(serializers.ModelSerializer):
    class Meta:
        model = RegionMeasurement
        fields = [
            "region",
            "lung_volume_ml",
            "infection_volume_ml",
            "ggo_volume_ml",
            "consolidation_volume_ml",
            "poi",
            "ihu",
            "severity_score",
        ]
        read_only_fields = fields


class OpacitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Opacity
        fields = [
            "index",
            "kind",
            "volume_ml",
            "longest_diameter_mm",
            "longest_axial_diameter_mm",
            "mean_hu",
            "centroid_voxel",
            "centroid_mm",
            "slice_first",
            "slice_last",
            "zone",
        ]
        read_only_fields = fields


class AnalysisRunSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="series.study_id", read_only=True)
    patient = serializers.IntegerField(source="series.study.patient_id", read_only=True)
    regions = RegionMeasurementSerializer(many=True, read_only=True)
    opacities = OpacitySerializer(many=True, read_only=True)
    relative_corona_score = serializers.SerializerMethodField()
    region_scheme = serializers.SerializerMethodField()
    suspected = serializers.SerializerMethodField()
    severity = serializers.SerializerMethodField()

    def get_relative_corona_score(self, run: AnalysisRun) -> float | None:
        return relative_corona_score(run)

    def get_region_scheme(self, run: AnalysisRun) -> dict:
        """What the zone regions are (every pipeline version so far: thirds of each lung, no lobes)."""
        return REGION_SCHEME

    def get_suspected(self, run: AnalysisRun) -> bool | None:
        return is_suspected(run)

    def get_severity(self, run: AnalysisRun) -> dict | None:
        """P(severe) from the team's active model and which model gave it (None until the run succeeds)."""
        if run.status != RunStatus.SUCCEEDED:
            return None
        # One active-model lookup per team per response, not per run.
        cache = self.context.setdefault("active_severity_models", {})
        team_id = run.series.study.patient.team_id
        if team_id not in cache:
            cache[team_id] = active_model(team_id)
        prediction = predict(run, cache[team_id])
        model = prediction.model
        return {
            "probability": prediction.probability,
            "model": None if model is None else {"id": model.pk, "name": model.name, "created": model.created},
            "detail": prediction.detail,
        }

    class Meta:
        model = AnalysisRun
        fields = [
            "id",
            "series",
            "study",
            "patient",
            "pipeline_version",
            "status",
            "stage",
            "progress",
            "error",
            "attempts",
            "created",
            "started",
            "finished",
            "lung_volume_ml",
            "infection_volume_ml",
            "ggo_volume_ml",
            "consolidation_volume_ml",
            "poi",
            "ihu",
            "ct_severity_score",
            "positive_ratio",
            "corona_score_ml",
            "relative_corona_score",
            "suspected",
            "severity",
            "warnings",
            "region_scheme",
            "regions",
            "opacities",
        ]
        read_only_fields = fields


class AnalysisRunDetailSerializer(AnalysisRunSerializer):
    class Meta(AnalysisRunSerializer.Meta):
        fields = [*AnalysisRunSerializer.Meta.fields, "models_used", "timings", "slice_metrics"]
        read_only_fields = fields


class SeverityModelSerializer(serializers.ModelSerializer):
    """A fitted severity model: features, coefficients (on standardised features), metrics, and whether active."""

    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = SeverityModel
        fields = [
            "id",
            "team",
            "cohort",
            "name",
            "features",
            "coefficients",
            "intercept",
            "scaler_mean",
            "scaler_scale",
            "metrics",
            "n_severe",
            "n_non_severe",
            "created",
            "created_by",
            "is_active",
        ]
        read_only_fields = fields


class CohortSerializer(serializers.ModelSerializer):
    class Meta:
        model = Cohort
        fields = ["id", "team", "name", "description", "patients", "created"]
        read_only_fields = fields
