"""Admin for analysis runs: state, results and the traceback of a failure, read-only."""

from __future__ import annotations

from django.contrib import admin

from .models import AnalysisRun, ClinicalSeverity, Opacity, RegionMeasurement, SeverityModel


class RegionMeasurementInline(admin.TabularInline):
    model = RegionMeasurement
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in RegionMeasurement._meta.fields]


class OpacityInline(admin.TabularInline):
    model = Opacity
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in Opacity._meta.fields]


@admin.register(AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin):
    list_display = ["id", "series", "pipeline_version", "status", "stage", "progress", "attempts", "poi", "created"]
    list_filter = ["status", "pipeline_version"]
    search_fields = ["series__series_instance_uid", "series__study__patient__identifier", "error"]
    list_select_related = ["series"]
    readonly_fields = [f.name for f in AnalysisRun._meta.fields]
    inlines = [RegionMeasurementInline, OpacityInline]


@admin.register(RegionMeasurement)
class RegionMeasurementAdmin(admin.ModelAdmin):
    list_display = ["run", "region", "lung_volume_ml", "infection_volume_ml", "poi", "ihu", "severity_score"]
    list_filter = ["region"]
    list_select_related = ["run"]


@admin.register(Opacity)
class OpacityAdmin(admin.ModelAdmin):
    list_display = ["run", "index", "kind", "volume_ml", "longest_diameter_mm", "zone"]
    list_filter = ["kind", "zone"]
    list_select_related = ["run"]


@admin.register(ClinicalSeverity)
class ClinicalSeverityAdmin(admin.ModelAdmin):
    list_display = ["study", "label", "recorded_by", "recorded_at"]
    list_filter = ["label"]
    search_fields = ["study__patient__identifier", "study__accession_number"]
    list_select_related = ["study__patient", "recorded_by"]
    raw_id_fields = ["study"]


@admin.register(SeverityModel)
class SeverityModelAdmin(admin.ModelAdmin):
    """Read-only: models are fitted and activated from the cohort page, which checks the roles."""

    list_display = ["name", "team", "cohort", "created", "n_severe", "n_non_severe", "is_active"]
    list_filter = ["is_active", "team"]
    list_select_related = ["team", "cohort"]
    readonly_fields = [f.name for f in SeverityModel._meta.fields]
