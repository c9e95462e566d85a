"""Errors the imaging pipeline raises on input it cannot analyse; the message is meant for the user."""

from __future__ import annotations


class PipelineError(ValueError):
    """The scan cannot be analysed (e.g. no lungs in the field of view); the message says why."""


NO_LUNGS_MESSAGE = "no lungs found in the field of view: is this a chest CT?"
