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
