"""The Celery application. Settings come from Django settings with the CELERY_ prefix."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covidsite.settings")

app = Celery("covidsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_queue_folder(sender: Celery, **kwargs: object) -> None:
    # The filesystem transport (laptop default) needs its folder before the first message.
    from django.conf import settings

    if str(settings.CELERY_BROKER_URL).startswith("filesystem://"):
        (settings.CELERY_QUEUE_DIR / "processed").mkdir(parents=True, exist_ok=True)
