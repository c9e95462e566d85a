"""Reading a CSV file of radiology reports: encoding, delimiter, header synonyms, dates. No Django.

Columns (any order, case and spacing ignored): the patient identifier, the accession number and/or the
study date, and the report text. Several text columns (findings and impression) are joined in their
order. Problems of one row stay with that row; problems of the whole file raise `CsvError`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime

MAX_BYTES = 5 * 1024 * 1024
DELIMITERS = ",;\t|"

# Role -> accepted header names (normalised: lower case, spaces and hyphens as underscores).
HEADERS: dict[str, tuple[str, ...]] = {
    "patient": ("patient_id", "patient", "identifier", "patientid", "patient_identifier", "mrn"),
    "accession": ("accession", "accession_number", "accessionnumber", "accession_no", "acc"),
    "study_date": ("study_date", "date", "studydate", "exam_date", "scan_date"),
    "text": ("report", "text", "report_text", "findings", "impression", "conclusion"),
}
ROLE_NAMES = {
    "patient": "patient identifier",
    "accession": "accession number",
    "study_date": "study date",
    "text": "report text",
}
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", "%d/%m/%Y")


class CsvError(ValueError):
    """The file as a whole cannot be read; the message says why and what to change."""


@dataclass(frozen=True)
class CsvRow:
    """One data row: `line` is the line number in the file (the header is line 1)."""

    line: int
    patient: str
    accession: str
    date_text: str
    study_date: date | None
    text: str
    problem: str = ""  # what is wrong with this row alone (bad date, empty text, ...)


@dataclass(frozen=True)
class ParsedCsv:
    encoding: str
    delimiter: str
    columns: dict[str, list[str]]  # role -> the file's header names used for it
    rows: list[CsvRow]

    @property
    def delimiter_name(self) -> str:
        return {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}.get(
            self.delimiter, self.delimiter
        )


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-16 with a byte-order mark, UTF-8 (with or without one), else Windows-1252/Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    if b"\x00" in data:
        raise CsvError("this is not a text file (it contains NUL bytes); save the table as CSV")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def sniff_delimiter(text: str) -> str:
    """The delimiter among , ; tab | (csv.Sniffer on the first lines, else the most frequent in the header)."""
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = text.splitlines()[0] if text else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def parse_date(raw: str) -> date:
    """A study date as YYYY-MM-DD, YYYYMMDD, DD.MM.YYYY or DD/MM/YYYY (a time after it is ignored)."""
    value = raw.strip().split(" ")[0].split("T")[0]
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date {raw.strip()!r} not understood; write it as YYYY-MM-DD or DD.MM.YYYY")


def _roles(header: list[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {role: [] for role in HEADERS}
    for index, name in enumerate(header):
        key = _normalise_header(name)
        for role, names in HEADERS.items():
            if key in names:
                found[role].append(index)
    return found


def _missing(roles: dict[str, list[int]]) -> list[str]:
    missing = []
    for role in ("patient", "text"):
        if not roles[role]:
            missing.append(f"{ROLE_NAMES[role]} ({', '.join(HEADERS[role][:3])})")
    if not roles["accession"] and not roles["study_date"]:
        missing.append(
            f"accession number or study date ({', '.join(HEADERS['accession'][:2])}, "
            f"{', '.join(HEADERS['study_date'][:2])})"
        )
    return missing


def parse(data: bytes) -> ParsedCsv:
    """Read a report CSV; raises CsvError for an empty, oversized, undecodable or header-less file."""
    if not data.strip():
        raise CsvError("the file is empty")
    if len(data) > MAX_BYTES:
        raise CsvError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it into smaller files")
    text, encoding = decode(data)
    delimiter = sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise CsvError(f"the header line cannot be read ({exc})") from None
    roles = _roles(header)
    missing = _missing(roles)
    if missing:
        shown = ", ".join(repr(h) for h in header) or "nothing"
        raise CsvError(f"missing column(s): {'; '.join(missing)}. The header line has {shown}.")

    def cell(row: list[str], indexes: list[int]) -> str:
        return " ".join(row[i].strip() for i in indexes[:1] if i < len(row))

    rows: list[CsvRow] = []
    line = reader.line_num
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in row):
                continue  # a blank line holds nothing to lose
            texts = [row[i].strip() for i in roles["text"] if i < len(row) and row[i].strip()]
            date_text = cell(row, roles["study_date"])
            problem, study_date = "", None
            if date_text:
                try:
                    study_date = parse_date(date_text)
                except ValueError as exc:
                    problem = str(exc)
            accession = cell(row, roles["accession"])
            patient = cell(row, roles["patient"])
            if not patient:
                problem = problem or "no patient identifier"
            elif not accession and not date_text:
                problem = problem or "neither an accession number nor a study date"
            elif not texts:
                problem = problem or "the report text is empty"
            rows.append(CsvRow(start, patient, accession, date_text, study_date, "\n\n".join(texts), problem))
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from None
    if not rows:
        raise CsvError("the file has a header but no report rows")
    columns = {role: [header[i] for i in indexes] for role, indexes in roles.items() if indexes}
    return ParsedCsv(encoding, delimiter, columns, rows)
