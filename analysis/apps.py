from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"
    verbose_name = "Image analysis"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects series_ready -> queue an analysis)
