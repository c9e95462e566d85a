"""Celery tasks: thin wrappers that take ids and call one service function."""

from __future__ import annotations

from celery import Task, shared_task


# acks_late + reject_on_worker_lost: a worker killed mid-analysis leaves the message unacknowledged,
# the broker redelivers it with the same task id, and execute_run lets that id take the run over.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def analyse_series(self: Task, run_id: int) -> None:
    from .execute import execute_run

    execute_run(run_id, task_id=self.request.id)
