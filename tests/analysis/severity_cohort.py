"""A synthetic cohort in the database: analysed studies with chosen POI/iHU and a clinical severity label."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from analysis.choices import SeverityLabel
from analysis.models import ClinicalSeverity
from patients.models import Cohort, Team
from tests.frontend.records import make_patient, make_run, make_series, make_study


def separated_values(n_per_class: int, seed: int = 11) -> list[tuple[str, float, float]]:
    """(label, poi, ihu): POI separates the classes strongly (0.30 vs 0.08), iHU weakly (-520 vs -560 HU)."""
    rng = np.random.default_rng(seed)
    values = []
    for label, poi, ihu in ((SeverityLabel.SEVERE, 0.30, -520.0), (SeverityLabel.NON_SEVERE, 0.08, -560.0)):
        for _ in range(n_per_class):
            values.append((label, float(np.clip(rng.normal(poi, 0.07), 0.001, 1)), float(rng.normal(ihu, 80))))
    return values


def build_cohort(team: Team, name: str = "ICU 2026", n_per_class: int = 12, *, prefix: str = "S") -> Cohort:
    """One patient per scan (identifier S-001...), accession ACC-S-001..., labelled as `separated_values` says."""
    cohort = Cohort.objects.create(team=team, name=name)
    for number, (label, poi, ihu) in enumerate(separated_values(n_per_class), start=1):
        patient = make_patient(team, f"{prefix}-{number:03d}")
        study = make_study(patient, date(2026, 1, 1) + timedelta(days=number), accession=f"ACC-{prefix}-{number:03d}")
        make_run(make_series(study), poi=poi, ihu=ihu)
        ClinicalSeverity.objects.create(study=study, label=label)
        cohort.patients.add(patient)
    return cohort
