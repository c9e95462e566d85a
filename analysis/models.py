"""Analysis runs and what they measured.

Run state is a row (status, stage, progress, error, timings, model versions), not a Celery
result: pages poll it, and a retried or duplicated task claims it atomically.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from patients.models import Cohort, Series, Study, Team, TeamScopedQuerySet

from .choices import OpacityKind, Region, RunStatus, SeverityLabel


class AnalysisRunQuerySet(TeamScopedQuerySet):
    team_path = "series__study__patient__team"


class AnalysisRun(models.Model):
    """One analysis of one series by one pipeline version (re-running replaces its results)."""

    series = models.ForeignKey(Series, on_delete=models.PROTECT, related_name="analysis_runs")
    pipeline_version = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    stage = models.CharField(max_length=32, blank=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="percent")
    error = models.TextField(blank=True, help_text="what went wrong, readable by a clinician")
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Claim bookkeeping (see analysis.execute): the Celery task id that holds the RUNNING claim, and
    # when its worker last reported; a claim whose heartbeat is older than runs.STALE_AFTER is abandoned.
    claim = models.CharField(max_length=64, blank=True, help_text="task id holding the running claim")
    heartbeat = models.DateTimeField(null=True, blank=True, help_text="last sign of life of the worker")
    models_used = models.JSONField(default=list, blank=True, help_text="name, version, sha256 per stage")
    timings = models.JSONField(default=dict, blank=True, help_text="seconds per stage")
    warnings = models.JSONField(default=list, blank=True)
    # Whole-scan bio-markers (per-lung and per-zone values live in RegionMeasurement).
    lung_volume_ml = models.FloatField(null=True, blank=True)
    infection_volume_ml = models.FloatField(null=True, blank=True)
    ggo_volume_ml = models.FloatField(null=True, blank=True)
    consolidation_volume_ml = models.FloatField(null=True, blank=True)
    poi = models.FloatField(null=True, blank=True, help_text="portion of infection, 0..1")
    ihu = models.FloatField(null=True, blank=True, help_text="mean HU inside the infection")
    ct_severity_score = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0-30")
    slice_metrics = models.JSONField(default=list, blank=True, help_text="per-slice areas, for curves")
    positive_ratio = models.FloatField(
        null=True, blank=True, help_text="slices the classifier calls abnormal / slices with lung"
    )
    corona_score_ml = models.FloatField(null=True, blank=True, help_text="sum of the heat map x voxel volume (mL)")
    # Label maps (compressed .npz under MEDIA_ROOT), on the series' canonical (z, y, x) grid.
    lungs_file = models.CharField(max_length=500, blank=True)
    infection_file = models.CharField(max_length=500, blank=True)
    heatmap_file = models.CharField(max_length=500, blank=True, help_text="Grad-CAM heat map, 0..255 for 0..1")

    objects = AnalysisRunQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "pipeline_version"], name="one_run_per_series_version")
        ]
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"analysis {self.pk} of series {self.series_id} ({self.status})"


class RegionMeasurement(models.Model):
    """POI, iHU and volumes of one region (both lungs, one lung or one of six zones) in one run."""

    run = models.ForeignKey(AnalysisRun, on_delete=models.CASCADE, related_name="regions")
    region = models.CharField(max_length=16, choices=Region.choices)
    lung_volume_ml = models.FloatField()
    infection_volume_ml = models.FloatField()
    ggo_volume_ml = models.FloatField()
    consolidation_volume_ml = models.FloatField()
    poi = models.FloatField()
    ihu = models.FloatField(null=True, blank=True)
    severity_score = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "region"], name="one_measurement_per_region")]

    def __str__(self) -> str:
        return f"{self.region}: POI {self.poi:.3f}"


class Opacity(models.Model):
    """One focal opacity (connected component of the infection) found by a run."""

    run = models.ForeignKey(AnalysisRun, on_delete=models.CASCADE, related_name="opacities")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=OpacityKind.choices)
    volume_ml = models.FloatField()
    longest_diameter_mm = models.FloatField()
    longest_axial_diameter_mm = models.FloatField()
    mean_hu = models.FloatField()
    centroid_voxel = models.JSONField(help_text="(z, y, x) index")
    centroid_mm = models.JSONField(help_text="(x, y, z) patient mm")
    slice_first = models.PositiveIntegerField()
    slice_last = models.PositiveIntegerField()
    zone = models.CharField(max_length=16, choices=Region.choices)

    class Meta:
        ordering = ["run", "-volume_ml"]
        verbose_name_plural = "opacities"

    def __str__(self) -> str:
        return f"{self.kind} {self.volume_ml:.1f} mL"


class ClinicalSeverityQuerySet(TeamScopedQuerySet):
    team_path = "study__patient__team"


class ClinicalSeverity(models.Model):
    """The clinical severity of one study (severe / non-severe / unknown), recorded by a clinician or admin."""

    study = models.OneToOneField(Study, on_delete=models.PROTECT, related_name="clinical_severity")
    label = models.CharField(max_length=16, choices=SeverityLabel.choices, default=SeverityLabel.UNKNOWN)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    recorded_at = models.DateTimeField(auto_now=True)

    objects = ClinicalSeverityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "clinical severities"

    def __str__(self) -> str:
        return f"{self.study}: {self.get_label_display()}"


class SeverityModelQuerySet(TeamScopedQuerySet):
    team_path = "team"


class SeverityModel(models.Model):
    """A logistic model of P(severe) fitted on a cohort, with its cross-validated metrics.

    Features are standardised inside the model: P = 1 / (1 + exp(-(intercept + sum(coef * (x - mean) / scale)))).
    All models of one fit share `created`. At most one model per team is active: it scores new analyses.
    """

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="severity_models")
    cohort = models.ForeignKey(Cohort, on_delete=models.PROTECT, related_name="severity_models")
    name = models.CharField(max_length=200)
    features = models.JSONField(help_text="feature keys, in coefficient order")
    coefficients = models.JSONField()
    intercept = models.FloatField()
    scaler_mean = models.JSONField()
    scaler_scale = models.JSONField()
    metrics = models.JSONField(default=dict, help_text="cross-validated AUC, CI, cut-off, ROC points")
    n_severe = models.PositiveIntegerField()
    n_non_severe = models.PositiveIntegerField()
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    is_active = models.BooleanField(default=False)

    objects = SeverityModelQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team"], condition=Q(is_active=True), name="one_active_severity_model_per_team"
            )
        ]
        ordering = ["-created", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.created:%Y-%m-%d})"
