"""Severity models on the Django side: a cohort's scans, fitting and saving models, the active model, P(severe).

A cohort's scans are its patients' studies that have a representative run (`analysis.study_runs`) and a
clinical severity label (severe or non-severe). The statistics are `analysis.stats.severity` (pure).
P(severe) is computed on read from the team's active model, so changing the active model changes every
page at once and nothing stale is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from patients.models import Cohort, Patient, Study, Team

from .choices import SeverityLabel
from .models import AnalysisRun, ClinicalSeverity, SeverityModel
from .stats.severity import (
    FEATURES,
    Evaluation,
    Fitted,
    SeverityFitError,
    check_enough,
    evaluate,
    group_difference_p,
)
from .study_runs import study_runs

# Fitted in this order; the first three are the paper's Table 2, the others are fitted when enough scans
# carry them (older runs have no corona score).
FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    ("poi",),
    ("ihu",),
    ("poi", "ihu"),
    ("corona_score_ml",),
    ("ct_severity_score",),
)
NO_ACTIVE_MODEL = "No active severity model"


@dataclass
class Scan:
    """One study of a cohort member, with the run that stands for it (if any) and its clinical label."""

    patient: Patient
    study: Study
    run: AnalysisRun | None
    label: str

    def values(self) -> dict[str, float | None]:
        return {key: getattr(self.run, key, None) for key in FEATURES}

    @property
    def is_labelled(self) -> bool:
        return self.label in (SeverityLabel.SEVERE, SeverityLabel.NON_SEVERE)


def cohort_scans(cohort: Cohort) -> list[Scan]:
    """Every study of the cohort's patients (patient identifier, then date), with its run and label, in 3 queries."""
    studies = list(
        Study.objects.filter(patient__cohorts=cohort, patient__team_id=cohort.team_id)
        .select_related("patient")
        .order_by("patient__identifier", "study_date", "id")
    )
    ids = [s.pk for s in studies]
    runs = study_runs(ids)
    labels = dict(ClinicalSeverity.objects.filter(study_id__in=ids).values_list("study_id", "label"))
    return [Scan(s.patient, s, runs.get(s.pk), labels.get(s.pk, SeverityLabel.UNKNOWN)) for s in studies]


def training_scans(scans: list[Scan]) -> list[Scan]:
    """The scans a model learns from: analysed and labelled severe or non-severe."""
    return [s for s in scans if s.run is not None and s.is_labelled]


@dataclass
class FitOutcome:
    """The models one fit saved, and the feature sets it had to skip with the reason."""

    models: list[SeverityModel]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _json_number(value: float | None) -> float | None:
    # JSON has no infinity: roc_curve's first threshold (+inf) or a degenerate cut-off is stored as null.
    return value if value is None or math.isfinite(value) else None


def _metrics(evaluation: Evaluation, excluded: int) -> dict:
    return {
        "auc": evaluation.auc,
        "auc_ci": list(evaluation.auc_ci),
        "cutoff_probability": _json_number(evaluation.cutoff_probability),
        "sensitivity": evaluation.sensitivity,
        "specificity": evaluation.specificity,
        "feature_cutoff": _json_number(evaluation.feature_cutoff),
        "feature_direction": evaluation.feature_direction,
        "feature_sensitivity": evaluation.feature_sensitivity,
        "feature_specificity": evaluation.feature_specificity,
        "cutoff_text": evaluation.cutoff_text(),
        "n_splits": evaluation.n_splits,
        "n_excluded": excluded,
        "roc": {"fpr": list(evaluation.fpr), "tpr": list(evaluation.tpr)},
    }


def feature_set_name(features: tuple[str, ...]) -> str:
    return " + ".join(FEATURES[f].label for f in features)


def fit_cohort(cohort: Cohort, user) -> FitOutcome:
    """Fit every feature set on the cohort's labelled scans and save one SeverityModel per set (same `created`).

    Raises TooFewScans when a class has too few scans overall; a feature set whose scans lack a value is
    fitted on the scans that have it, and skipped (with the reason) when too few remain.
    """
    scans = training_scans(cohort_scans(cohort))
    labels = [1 if s.label == SeverityLabel.SEVERE else 0 for s in scans]
    check_enough(labels)
    created = timezone.now()
    outcome = FitOutcome(models=[])
    evaluations: list[tuple[Evaluation, int]] = []
    for features in FEATURE_SETS:
        usable = [i for i, s in enumerate(scans) if all(s.values()[f] is not None for f in features)]
        try:
            evaluation = evaluate([scans[i].values() for i in usable], [labels[i] for i in usable], features)
        except SeverityFitError as exc:
            name = feature_set_name(features)
            lacking = f"only {len(usable)} of {len(scans)} scans have {name}: " if len(usable) < len(scans) else ""
            outcome.skipped.append((name, f"{lacking}{exc}"))
            continue
        evaluations.append((evaluation, len(scans) - len(usable)))
    with transaction.atomic():
        for evaluation, excluded in evaluations:
            model = evaluation.model
            outcome.models.append(
                SeverityModel.objects.create(
                    team_id=cohort.team_id,
                    cohort=cohort,
                    name=f"{cohort.name}: {evaluation.name}",
                    features=list(model.features),
                    coefficients=list(model.coefficients),
                    intercept=model.intercept,
                    scaler_mean=list(model.mean),
                    scaler_scale=list(model.scale),
                    metrics=_metrics(evaluation, excluded),
                    n_severe=evaluation.n_severe,
                    n_non_severe=evaluation.n_non_severe,
                    created=created,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                )
            )
    return outcome


def latest_fit(cohort: Cohort) -> list[SeverityModel]:
    """The models of the cohort's most recent fit, in FEATURE_SETS order (empty before the first fit)."""
    newest = SeverityModel.objects.filter(cohort=cohort).order_by("-created").values_list("created", flat=True).first()
    if newest is None:
        return []
    models = list(SeverityModel.objects.filter(cohort=cohort, created=newest))
    order = {features: i for i, features in enumerate(FEATURE_SETS)}
    return sorted(models, key=lambda m: order.get(tuple(m.features), len(order)))


def activate(model: SeverityModel) -> SeverityModel:
    """Make `model` its team's one active severity model (the previous one stops scoring)."""
    with transaction.atomic():
        # Two admins activating at once queue on the team row instead of tripping the one-active constraint.
        Team.objects.select_for_update().filter(pk=model.team_id).first()
        SeverityModel.objects.filter(team_id=model.team_id, is_active=True).exclude(pk=model.pk).update(is_active=False)
        model.is_active = True
        model.save(update_fields=["is_active"])
    return model


def fitted(model: SeverityModel) -> Fitted:
    return Fitted(
        features=tuple(model.features),
        coefficients=tuple(model.coefficients),
        intercept=model.intercept,
        mean=tuple(model.scaler_mean),
        scale=tuple(model.scaler_scale),
    )


def active_model(team_id: int) -> SeverityModel | None:
    return SeverityModel.objects.filter(team_id=team_id, is_active=True).select_related("cohort").first()


@dataclass(frozen=True)
class SeverityPrediction:
    """P(severe) of one run and the model that gave it; `detail` says why there is no probability."""

    probability: float | None
    model: SeverityModel | None
    detail: str = ""


def predict(run: AnalysisRun, model: SeverityModel | None) -> SeverityPrediction:
    """P(severe) of a succeeded run from `model` (the team's active model, see `active_model`)."""
    if model is None:
        return SeverityPrediction(None, None, NO_ACTIVE_MODEL)
    try:
        probability = fitted(model).probability({key: getattr(run, key, None) for key in FEATURES})
    except SeverityFitError as exc:
        return SeverityPrediction(None, model, f"Not scored: {exc}.")
    return SeverityPrediction(probability, model)


def severity_of_run(run: AnalysisRun) -> SeverityPrediction:
    """P(severe) of a run from its team's active model (the run is already scoped to the user)."""
    return predict(run, active_model(run.series.study.patient.team_id))


@dataclass(frozen=True)
class GroupValues:
    """One bio-marker's values in the severe and non-severe groups, and the Mann-Whitney p-value."""

    feature: str
    severe: list[float]
    non_severe: list[float]
    p_value: float | None


def group_values(scans: list[Scan], feature: str) -> GroupValues:
    """Box-plot data of one bio-marker over the labelled, analysed scans."""
    chosen = training_scans(scans)
    severe = [s.values()[feature] for s in chosen if s.label == SeverityLabel.SEVERE]
    non_severe = [s.values()[feature] for s in chosen if s.label == SeverityLabel.NON_SEVERE]
    severe = [v for v in severe if v is not None]
    non_severe = [v for v in non_severe if v is not None]
    return GroupValues(feature, severe, non_severe, group_difference_p(severe, non_severe))
