"""Admin for analysis runs: state, results and the traceback of a failure, read-only."""

from __future__ import annotations

from django.contrib import admin

from .models import AnalysisRun, Opacity, RegionMeasurement


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
