"""The Celery application. Settings come from Django settings with the CELERY_ prefix."""

from __future__ import annotations

import logging
import os

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covidsite.settings")

app = Celery("covidsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
logger = logging.getLogger(__name__)


class ResendUnsentAnalyses(bootsteps.StartStopStep):
    """Each time a worker (re)connects to the broker, send the analyses queued while it was unreachable.

    A consumer step starts again after every reconnection, so a broker outage heals without anyone
    re-uploading or retrying (see `analysis.runs.resend_unsent`).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, parent: object) -> None:
        from analysis.runs import resend_unsent

        try:
            resend_unsent()
        except Exception:  # the database may be the thing that is down; the worker must still start
            logger.exception("could not re-send the analyses queued while the task queue was unreachable")


app.steps["consumer"].add(ResendUnsentAnalyses)


@app.on_after_configure.connect
def _make_queue_folder(sender: Celery, **kwargs: object) -> None:
    # The filesystem transport (laptop default) needs its folder before the first message.
    from django.conf import settings

    if str(settings.CELERY_BROKER_URL).startswith("filesystem://"):
        (settings.CELERY_QUEUE_DIR / "processed").mkdir(parents=True, exist_ok=True)
