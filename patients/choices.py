"""Choices for the patients app, as classes rather than bare strings."""

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Team admin"
    CLINICIAN = "clinician", "Clinician"
    VIEWER = "viewer", "Viewer"


# Roles allowed to add or change clinical data (uploads, reports).
WRITE_ROLES: tuple[str, ...] = (Role.ADMIN, Role.CLINICIAN)
ADMIN_ROLES: tuple[str, ...] = (Role.ADMIN,)


class Sex(models.TextChoices):
    FEMALE = "F", "Female"
    MALE = "M", "Male"
    OTHER = "O", "Other"
    UNKNOWN = "U", "Unknown"


class SeriesStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    READY = "ready", "Ready"
    REJECTED = "rejected", "Rejected"


class SeriesSource(models.TextChoices):
    DICOM = "dicom", "DICOM"
    NIFTI = "nifti", "NIfTI"


class ReportSource(models.TextChoices):
    CSV = "csv", "CSV import"
    MANUAL = "manual", "Entered on the page"
    API = "api", "API"


class ReportLabel(models.TextChoices):
    """What a radiology report says about the course since the previous scan (patients.reports)."""

    PROGRESSION = "progression", "Progression"
    REGRESSION = "regression", "Regression"
    STABLE = "stable", "Stable"
    PARTIAL = "partial", "Partial change"
    # A change is named but hedged ("possible progression", "cannot exclude new lesions").
    UNCERTAIN = "uncertain", "Uncertain"
    NONE = "", "No phrase found"


class PhraseLabel(models.TextChoices):
    """What a lexicon phrase means: a change, or a cue that negates or hedges the change after it."""

    PROGRESSION = "progression", "Progression"
    REGRESSION = "regression", "Regression"
    STABLE = "stable", "Stable"
    PARTIAL = "partial", "Partial change"
    NEGATION = "negation", "Negation cue"
    UNCERTAINTY = "uncertainty", "Uncertainty cue"


class ImportRowStatus(models.TextChoices):
    """What became (or, in a preview, will become) of one row of a report import."""

    NEW = "new", "Will be saved"
    SAVED = "saved", "Saved"
    DUPLICATE = "duplicate", "Already stored"
    UNMATCHED = "unmatched", "No matching study"
    INVALID = "invalid", "Not readable"
