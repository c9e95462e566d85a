"""The data migration that moved the suspected-threshold default: teams on the old default move, a
value a team admin chose stays, and the way back restores the old default."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

STEPS = [
    ("0003_radiology_reports_lexicon_tolerances", "0004_suspected_threshold_for_mirrored_reading", 0.27, 0.22),
    ("0004_suspected_threshold_for_mirrored_reading", "0005_suspected_threshold_for_fused_slice_reading", 0.22, 0.28),
    ("0005_suspected_threshold_for_fused_slice_reading", "0006_suspected_threshold_after_hilar_rule", 0.28, 0.21),
    ("0006_suspected_threshold_after_hilar_rule", "0007_suspected_threshold_with_dense_lung_recovery", 0.21, 0.23),
]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("before", "after", "old", "new"), STEPS)
def test_teams_on_the_old_default_move_to_the_new_one_and_chosen_values_stay(before, after, old, new):
    try:
        apps = _migrate([("patients", before)])
        team = apps.get_model("patients", "Team")
        team.objects.create(name="Default ward", slug="default-ward", suspected_ratio_threshold=old)
        team.objects.create(name="Strict ward", slug="strict-ward", suspected_ratio_threshold=0.4)

        team = _migrate([("patients", after)]).get_model("patients", "Team")
        assert team.objects.get(slug="default-ward").suspected_ratio_threshold == pytest.approx(new)
        assert team.objects.get(slug="strict-ward").suspected_ratio_threshold == pytest.approx(0.4)

        team = _migrate([("patients", before)]).get_model("patients", "Team")
        assert team.objects.get(slug="default-ward").suspected_ratio_threshold == pytest.approx(old)
    finally:
        _migrate(_migrate_leaf())


def _migrate_leaf():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
