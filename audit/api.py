"""Audit for the REST API: reading one patient record through the API is audited like opening its page."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from .choices import AuditAction
from .log import record


class AuditedRetrieveMixin:
    """For read-only viewsets: record a VIEW event for every retrieved object (lists are not audited)."""

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        instance = self.get_object()
        record(request, AuditAction.VIEW, instance)  # the DRF request: its user is the token's user too
        return Response(self.get_serializer(instance).data)
