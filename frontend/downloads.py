"""File downloads of patient data: one way to build them, so every one is an attachment that no browser
or proxy keeps (Cache-Control: no-store), and long CSV files stream row by row instead of being built
in memory."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from django.http import HttpResponse, StreamingHttpResponse

CSV_TYPE = "text/csv; charset=utf-8"


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def _as_download(response: HttpResponse | StreamingHttpResponse, filename: str):
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def csv_download(rows: Iterable[Iterable[object]], filename: str) -> StreamingHttpResponse:
    """Stream `rows` (the header first) as a CSV attachment."""
    writer = csv.writer(_Echo())
    return _as_download(StreamingHttpResponse((writer.writerow(row) for row in rows), content_type=CSV_TYPE), filename)


def attachment(content: bytes | str, filename: str, content_type: str = CSV_TYPE) -> HttpResponse:
    """A file built in memory (an export, a short CSV) as an attachment."""
    return _as_download(HttpResponse(content, content_type=content_type), filename)
