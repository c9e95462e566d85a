"""A database that cannot be reached is a clear, retryable 503, not a bare server error.

When PostgreSQL restarts (or the connection to it is cut) in the middle of a request, the view's
query raises OperationalError/InterfaceError. This middleware turns that into a 503 that says what
happened and to try again; Django closes the broken connection when the request ends, so the retry
gets a fresh one. Only when the connection is really gone: an OperationalError on a connection that
still answers (SQLite's "no such table", a lock timeout) and other database errors (integrity,
programming) stay server errors, since they are bugs or conflicts, not an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
MESSAGE = (
    "the database cannot be reached right now, so this request could not be completed; "
    "anything it was storing was not kept: try again in a minute"
)


class DatabaseOutageMiddleware:
    """Answer 503 (JSON under /api/, plain text elsewhere) when the view lost the database."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError) or not database_lost():
            return None
        logger.error("database unreachable during %s %s: %s", request.method, request.path, exception)
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"detail": MESSAGE}, status=503)
        else:
            response = HttpResponse(f"Service unavailable: {MESSAGE}.", status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def database_lost() -> bool:
    """Whether the request's database connection is gone (never opened, closed by a failure, or dead)."""
    if connection.connection is None:
        return True
    try:
        return not connection.is_usable()
    except Exception:  # a backend that fails even to check: as good as gone
        return True
