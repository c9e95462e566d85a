from django.contrib import admin

from .models import Cohort, Instance, Membership, Patient, RadiologyReport, ReportPhrase, Series, Study, Team, Upload


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("identifier", "team", "sex", "birth_year", "created")
    list_filter = ("team",)
    search_fields = ("identifier",)


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("patient", "study_date", "accession_number", "description")
    list_filter = ("patient__team",)
    search_fields = ("patient__identifier", "accession_number", "study_instance_uid")


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ("study", "description", "modality", "slice_count", "slice_spacing", "status")
    list_filter = ("status", "modality")


admin.site.register(Instance)
admin.site.register(Cohort)
admin.site.register(Upload)


@admin.register(RadiologyReport)
class RadiologyReportAdmin(admin.ModelAdmin):
    list_display = ("study", "label", "phrase", "source", "created_by", "created")
    list_filter = ("label", "source", "study__patient__team")
    search_fields = ("study__patient__identifier", "study__accession_number", "text")


@admin.register(ReportPhrase)
class ReportPhraseAdmin(admin.ModelAdmin):
    list_display = ("phrase", "language", "label", "team")
    list_filter = ("team", "language", "label")
