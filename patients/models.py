"""Teams, their members and the clinical records they hold: patients, studies, series, instances.

Every query for patient data goes through the `for_user` queryset methods below, so that no view,
serializer or task can forget to scope it to the requesting user's teams.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from .choices import PhraseLabel, ReportLabel, ReportSource, Role, SeriesSource, SeriesStatus, Sex

# Default share of abnormal slices that flags a scan: half way between the highest share on the normal
# COVID-CT-MD scans and the lowest on the pneumonia ones, over their 2 mm scans and 10 mm slabs, as the
# worker reads them (pipeline 0.6.0: normal002 in 10 mm slabs, P001 in 10 mm slabs; model card). The
# settings page quotes the two shares; tests/analysis/test_corona_evidence.py measures them again.
HIGHEST_NORMAL_SHARE = 0.10
LOWEST_PNEUMONIA_SHARE = 0.36
SUSPECTED_RATIO_THRESHOLD = round((HIGHEST_NORMAL_SHARE + LOWEST_PNEUMONIA_SHARE) / 2, 2)

# Default tolerances under which a change between two consecutive scans counts as stable. They are
# starting points a team admin tunes: one percentage point of POI and 10 HU of iHU are about the spread
# of repeated measurements of one scan reconstructed differently; the corona score is compared relatively.
POI_TOLERANCE_PP = 1.0
IHU_TOLERANCE_HU = 10.0
CORONA_TOLERANCE = 0.10


class Team(models.Model):
    """A hospital team: the unit that owns patients. Users see only their teams' patients."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    suspected_ratio_threshold = models.FloatField(
        default=SUSPECTED_RATIO_THRESHOLD,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="a scan is flagged 'suspected' when this share of its lung slices is called abnormal",
    )
    poi_tolerance_pp = models.FloatField(
        default=POI_TOLERANCE_PP,
        validators=[MinValueValidator(0.0), MaxValueValidator(100.0)],
        help_text="a POI change within this many percentage points between consecutive scans is stable",
    )
    ihu_tolerance_hu = models.FloatField(
        default=IHU_TOLERANCE_HU,
        validators=[MinValueValidator(0.0), MaxValueValidator(1000.0)],
        help_text="an iHU change within this many HU between consecutive scans is stable",
    )
    corona_tolerance = models.FloatField(
        default=CORONA_TOLERANCE,
        validators=[MinValueValidator(0.0), MaxValueValidator(10.0)],
        help_text="a corona score change within this share of the earlier score is stable (0.1 = 10 %)",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MembershipQuerySet(models.QuerySet):
    def for_user(self, user) -> MembershipQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)


class Membership(models.Model):
    """A user's role in one team."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="unique_membership")]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


def teams_of(user, roles: tuple[str, ...] | None = None) -> models.QuerySet[Team]:
    """The teams a user belongs to, optionally only those where the user holds one of `roles`."""
    if not user.is_authenticated:
        return Team.objects.none()
    memberships = Membership.objects.filter(user=user)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return Team.objects.filter(id__in=memberships.values("team_id"))


class TeamScopedQuerySet(models.QuerySet):
    """Base for patient data: `team_path` names the lookup from the model to its Team."""

    team_path = "team"

    def for_user(self, user, roles: tuple[str, ...] | None = None):
        return self.filter(**{f"{self.team_path}__in": teams_of(user, roles)})

    def for_team(self, team: Team):
        return self.filter(**{self.team_path: team})


class PatientQuerySet(TeamScopedQuerySet):
    team_path = "team"


class Patient(models.Model):
    """A patient of one team, known by the team's own identifier (DICOM PatientID by default)."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="patients")
    identifier = models.CharField(max_length=64)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = PatientQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "identifier"], name="unique_patient_per_team")]
        ordering = ["identifier"]

    def __str__(self) -> str:
        return self.identifier


class StudyQuerySet(TeamScopedQuerySet):
    team_path = "patient__team"


class Study(models.Model):
    """One imaging visit (DICOM study) of a patient."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    accession_number = models.CharField(max_length=64, blank=True)
    study_date = models.DateField(null=True, blank=True)
    description = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "study_instance_uid"], name="unique_study_per_patient")
        ]
        ordering = ["patient", "study_date", "id"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return f"{self.patient} {self.study_date or ''} {self.description}".strip()


class SeriesQuerySet(TeamScopedQuerySet):
    team_path = "study__patient__team"


class Series(models.Model):
    """One CT series with its geometry. Only a complete, consistent series becomes READY."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, default="CT")
    description = models.CharField(max_length=200, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=SeriesSource.choices, default=SeriesSource.DICOM)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    slice_count = models.PositiveIntegerField(default=0)
    # Pixel spacing in mm: row spacing (between rows, i.e. along y) and column spacing (along x).
    pixel_spacing_row = models.FloatField(null=True, blank=True)
    pixel_spacing_col = models.FloatField(null=True, blank=True)
    slice_spacing = models.FloatField(null=True, blank=True, help_text="distance between slice centres, mm")
    slice_thickness = models.FloatField(null=True, blank=True, help_text="nominal SliceThickness, mm")
    orientation = models.JSONField(default=list, blank=True, help_text="ImageOrientationPatient, 6 floats")
    origin = models.JSONField(default=list, blank=True, help_text="position of the first (lowest) slice, mm")
    status = models.CharField(max_length=16, choices=SeriesStatus.choices, default=SeriesStatus.RECEIVING)
    status_message = models.TextField(blank=True)
    # For a NIfTI upload the volume itself is the stored file (no instances).
    volume_file = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = SeriesQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "series_instance_uid"], name="unique_series_per_study")]
        ordering = ["study", "series_number", "id"]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return f"{self.description or self.series_instance_uid} ({self.slice_count} slices)"


class InstanceQuerySet(TeamScopedQuerySet):
    team_path = "series__study__patient__team"


class Instance(models.Model):
    """One stored DICOM file (one slice). `index` is its place along the slice normal, from 0."""

    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    index = models.PositiveIntegerField(default=0)
    position = models.FloatField(help_text="position along the slice normal, mm")
    file = models.CharField(max_length=500, help_text="path relative to MEDIA_ROOT")
    file_size = models.PositiveBigIntegerField(default=0)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "sop_instance_uid"], name="unique_instance_per_series")
        ]
        ordering = ["series", "index"]

    def __str__(self) -> str:
        return self.sop_instance_uid


class CohortQuerySet(TeamScopedQuerySet):
    team_path = "team"


class Cohort(models.Model):
    """A named group of a team's patients, for severity models and agreement statistics."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="cohorts")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    patients = models.ManyToManyField(Patient, related_name="cohorts", blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = CohortQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="unique_cohort_per_team")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UploadQuerySet(TeamScopedQuerySet):
    team_path = "team"


class Upload(models.Model):
    """One upload (browser, API or command line) and its outcome, file by file."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="uploads")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="uploads"
    )
    channel = models.CharField(max_length=16, default="browser")
    created = models.DateTimeField(auto_now_add=True)
    file_count = models.PositiveIntegerField(default=0)
    accepted_count = models.PositiveIntegerField(default=0)
    refused_count = models.PositiveIntegerField(default=0)
    # {"series": [{"id", "uid", "patient", "study", "slices", "created": bool}],
    #  "refused": [{"file", "reason"}], "notes": [...]}
    report = models.JSONField(default=dict, blank=True)

    objects = UploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"upload {self.pk} by {self.user} ({self.accepted_count} accepted, {self.refused_count} refused)"


class RadiologyReportQuerySet(TeamScopedQuerySet):
    team_path = "study__patient__team"


class RadiologyReport(models.Model):
    """A radiology report of one study and the change it describes (extracted by patients.reports).

    `content_hash` is the SHA-256 of the text with its white space collapsed: the same text imported
    again for the same study is recognised and not stored twice.
    """

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="reports")
    text = models.TextField()
    language = models.CharField(max_length=8, default="en")
    report_date = models.DateField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=ReportSource.choices, default=ReportSource.MANUAL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="reports"
    )
    created = models.DateTimeField(auto_now_add=True)
    label = models.CharField(max_length=16, choices=ReportLabel.choices, blank=True, default=ReportLabel.NONE)
    phrase = models.CharField(max_length=200, blank=True, help_text="the phrase that decided the label, as written")
    span_start = models.PositiveIntegerField(null=True, blank=True)
    span_end = models.PositiveIntegerField(null=True, blank=True)
    content_hash = models.CharField(max_length=64)

    objects = RadiologyReportQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "content_hash"], name="unique_report_text_per_study")]
        ordering = ["study", "-created", "-id"]

    def __str__(self) -> str:
        return f"report of {self.study} ({self.get_label_display()})"


class ReportPhraseQuerySet(TeamScopedQuerySet):
    team_path = "team"


class ReportPhrase(models.Model):
    """A phrase of a team's report lexicon: it adds to, or overrides, the built-in phrases of its language."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="report_phrases")
    language = models.CharField(max_length=8, default="en")
    phrase = models.CharField(max_length=200, help_text="lower case; a cue that follows its phrase starts with '...'")
    label = models.CharField(max_length=16, choices=PhraseLabel.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = ReportPhraseQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "language", "phrase"], name="unique_report_phrase_per_team")
        ]
        ordering = ["language", "phrase"]

    def __str__(self) -> str:
        return f"{self.phrase} ({self.language}): {self.label}"
