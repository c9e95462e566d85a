"""Queue an analysis when the patients app reports a series as ready."""

from __future__ import annotations

from django.dispatch import receiver

from patients.signals import series_ready

from .runs import queue_analysis


@receiver(series_ready)
def analyse_ready_series(sender, series, **kwargs) -> None:
    queue_analysis(series)
