"""The one REST router: each app registers its viewsets in its own api.py."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

# Imported for their registrations on `router`.
from analysis import api as _analysis_api  # noqa: E402, F401
from analysis import severity_api as _severity_api  # noqa: E402, F401
from patients import api as _patients_api  # noqa: E402, F401
from patients import report_api as _report_api  # noqa: E402, F401
