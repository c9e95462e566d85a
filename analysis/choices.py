"""Choices for the analysis app."""

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Region(models.TextChoices):
    BOTH = "both", "Both lungs"
    RIGHT = "right", "Right lung"
    LEFT = "left", "Left lung"
    RIGHT_UPPER = "right_upper", "Right upper zone"
    RIGHT_MIDDLE = "right_middle", "Right middle zone"
    RIGHT_LOWER = "right_lower", "Right lower zone"
    LEFT_UPPER = "left_upper", "Left upper zone"
    LEFT_MIDDLE = "left_middle", "Left middle zone"
    LEFT_LOWER = "left_lower", "Left lower zone"


class OpacityKind(models.TextChoices):
    GGO = "ggo", "Ground-glass opacity"
    CONSOLIDATION = "consolidation", "Consolidation"
    MIXED = "mixed", "Mixed"


class SeverityLabel(models.TextChoices):
    """A study's clinical severity as recorded by the team (the outcome the severity models learn)."""

    SEVERE = "severe", "Severe"
    NON_SEVERE = "non_severe", "Non-severe"
    UNKNOWN = "unknown", "Unknown"
