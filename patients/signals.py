"""Signals the patients app sends; other apps listen without the patients app importing them."""

from django.dispatch import Signal

# Sent (after the ingest transaction commits) for every series that became READY.
# Arguments: series (patients.models.Series).
series_ready = Signal()
