import django.core.validators
from django.db import migrations, models

# P(abnormal) per slice now fuses the classifier with the slice's lesion area, which moved the
# data-chosen default from 0.22 to 0.28 (analysis/nets/MODEL_CARD.md). As in 0004, teams still on the
# old default move with it; a value a team admin chose stays.
OLD_DEFAULT, NEW_DEFAULT = 0.22, 0.28


def _move(apps, old: float, new: float) -> None:
    apps.get_model("patients", "Team").objects.filter(suspected_ratio_threshold=old).update(
        suspected_ratio_threshold=new
    )


def forwards(apps, schema_editor):
    _move(apps, OLD_DEFAULT, NEW_DEFAULT)


def backwards(apps, schema_editor):
    _move(apps, NEW_DEFAULT, OLD_DEFAULT)


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0004_suspected_threshold_for_mirrored_reading"),
    ]

    operations = [
        migrations.AlterField(
            model_name="team",
            name="suspected_ratio_threshold",
            field=models.FloatField(
                default=0.28,
                help_text="a scan is flagged 'suspected' when this share of its lung slices is called abnormal",
                validators=[django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(1.0)],
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
