"""A staticfiles finder that serves plotly.js from the installed plotly Python package.

plotly ships the exact plotly.js its figures are built for; serving that file (as
`frontend/vendor/plotly.min.js`) keeps the two versions in step and needs no CDN or npm, which
matters on an offline hospital network. Enabled in settings.STATICFILES_FINDERS.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_PATH = "frontend/vendor/plotly.min.js"


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


class PlotlyFinder(BaseFinder):
    """Finds only `frontend/vendor/plotly.min.js`, in the plotly package's package_data folder."""

    def check(self, **kwargs) -> list:
        source = _plotly_js()
        if not source.is_file():
            return [
                Error(
                    f"plotly.js is missing from the plotly package (looked for {source.name})",
                    hint="Reinstall the plotly Python package.",
                    id="frontend.E001",
                )
            ]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        if path != PLOTLY_STATIC_PATH or not _plotly_js().is_file():
            return [] if find_all else None
        found = str(_plotly_js())
        return [found] if find_all else found

    def list(self, ignore_patterns):
        source = _plotly_js()
        if source.is_file():
            storage = FileSystemStorage(location=str(source.parent))
            storage.prefix = str(Path(PLOTLY_STATIC_PATH).parent)
            yield source.name, storage
