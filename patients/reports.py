"""Phrase extraction from radiology reports: which change since the previous scan a report describes.

Pure text processing (no Django), tested on its own. A lexicon maps phrases to a change label
(progression, regression, stable, partial) or to a cue that changes how a nearby phrase is read:

- a negation cue ("no", "without", "no evidence of") before a phrase, in the same clause and at most
  `CUE_WINDOW` words away, cancels it: "no new lesions" is not progression;
- an uncertainty cue ("possible", "cannot exclude", "may represent") hedges it: the report gets the label
  UNCERTAIN instead of a confident one, and the agreement statistics leave it out, as they leave out
  reports without any phrase. "likely" and "probably" are read as confident (radiologists use them for a
  high probability), so they are no cue;
- a cue written with a leading "..." follows the phrase instead: "progression ... not seen",
  "new lesions ... cannot be excluded".

Clauses end at . ; : ! ? a comma, a line break, and contrast words (but, however, although, whereas,
while, except), so a cue never reaches across them. Phrases match whole words, case-insensitively, with
spaces or hyphens between words and an optional plural "s"/"es"; where two phrases overlap, the one
starting first and then the longest wins ("partially absorbed" beats "absorbed").

The report's label combines its confident phrases: progression and regression together is a partial
change (some lesions grow while others shrink), any partial phrase makes it partial, then progression,
regression, stable in that order; without a confident phrase a hedged one makes it UNCERTAIN.
English is built in; a team adds phrases and cues for any language code through its lexicon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

# Label values, identical to patients.choices.ReportLabel / PhraseLabel (that module needs Django).
PROGRESSION = "progression"
REGRESSION = "regression"
STABLE = "stable"
PARTIAL = "partial"
UNCERTAIN = "uncertain"
NONE = ""
NEGATION = "negation"
UNCERTAINTY = "uncertainty"

CHANGE_LABELS: tuple[str, ...] = (PROGRESSION, REGRESSION, STABLE, PARTIAL)
CUE_LABELS: tuple[str, ...] = (NEGATION, UNCERTAINTY)
PHRASE_LABELS: tuple[str, ...] = CHANGE_LABELS + CUE_LABELS

# A cue acts on a phrase at most this many words away (NegEx uses five or six).
CUE_WINDOW = 6
# A cue written with this prefix comes after the phrase it acts on.
AFTER = "..."

_DEFAULT_EN: dict[str, tuple[str, ...]] = {
    PROGRESSION: (
        "progression",
        "progressed",
        "progressive",
        "progressing",
        "progress",
        "increased",
        "increase in",
        "increasing",
        "enlarged",
        "enlarging",
        "enlargement",
        "larger",
        "more extensive",
        "extended",
        "expanded",
        "spread",
        "worse",
        "worsened",
        "worsening",
        "deteriorated",
        "deterioration",
        "aggravated",
        "new lesion",
        "new opacity",
        "new opacities",
        "new ground-glass",
        "new consolidation",
        "new infiltrate",
        "new patchy",
        "newly appeared",
    ),
    REGRESSION: (
        "regression",
        "regressed",
        "regressing",
        "absorbed",
        "absorption",
        "resolved",
        "resolving",
        "resolution",
        "improved",
        "improvement",
        "improving",
        "decreased",
        "decrease in",
        "decreasing",
        "reduced",
        "reduction",
        "smaller",
        "less extensive",
        "diminished",
        "shrunk",
        "shrinking",
        "faded",
        "fading",
        "cleared",
        "clearing",
        "disappeared",
        "dissipated",
    ),
    STABLE: (
        "stable",
        "unchanged",
        "essentially unchanged",
        "no change",
        "no significant change",
        "no obvious change",
        "no interval change",
        "no marked change",
        "not significantly changed",
        "similar to prior",
        "similar to previous",
        "similar to the prior",
        "similar to the previous",
        "comparable to prior",
        "comparable to the previous",
    ),
    PARTIAL: (
        "partially absorbed",
        "partly absorbed",
        "partial absorption",
        "partially resolved",
        "partly resolved",
        "partial resolution",
        "partially regressed",
        "partial regression",
        "partially improved",
        "partly improved",
        "mixed response",
    ),
    NEGATION: (
        "no",
        "not",
        "without",
        "no evidence of",
        "no sign of",
        "no signs of",
        "negative for",
        "absence of",
        "free of",
        "neither",
        "nor",
        "never",
        "... not seen",
        "... not observed",
        "... not identified",
        "... not present",
        "... not evident",
        "... not detected",
        "... not noted",
        "... ruled out",
        "... excluded",
        "... absent",
    ),
    UNCERTAINTY: (
        "possible",
        "possibly",
        "may",
        "might",
        "could",
        "perhaps",
        "questionable",
        "equivocal",
        "indeterminate",
        "uncertain",
        "suspected",
        "suspicious for",
        "may represent",
        "could represent",
        "cannot exclude",
        "can not exclude",
        "cannot rule out",
        "can't exclude",
        "can't rule out",
        "... cannot be excluded",
        "... cannot be ruled out",
        "... not excluded",
        "... is possible",
        "... is questionable",
        "... ?",
    ),
}

DEFAULT_LEXICONS: dict[str, dict[str, tuple[str, ...]]] = {"en": _DEFAULT_EN}
DEFAULT_LANGUAGE = "en"

_CLAUSE_BREAK = re.compile(
    r"[;:!?\n,]|\.(?=\s|$)|\b(?:but|however|although|though|whereas|while|except)\b", re.IGNORECASE
)
_WORD = re.compile(r"\w+")


def normalise_phrase(phrase: str) -> str:
    """The stored form of a lexicon phrase: lower case, single spaces, a cue's "..." kept in front."""
    text = " ".join(phrase.lower().split())
    if text.startswith(AFTER):
        rest = text[len(AFTER) :].strip()
        return f"{AFTER} {rest}" if rest else ""
    return text


@dataclass(frozen=True)
class Phrase:
    """One lexicon entry: normalised text and what it means (one of PHRASE_LABELS)."""

    text: str
    label: str

    @property
    def follows(self) -> bool:
        """A cue that acts on the phrase before it ("progression ... not seen")."""
        return self.text.startswith(AFTER)

    @property
    def words(self) -> str:
        return self.text[len(AFTER) :].strip() if self.follows else self.text

    def pattern(self) -> str:
        tokens = [t for t in re.split(r"[\s-]+", self.words) if t]
        body = r"[\s\-]+".join(re.escape(t) for t in tokens)
        head = r"\b" if re.match(r"\w", tokens[0]) else ""
        tail = r"(?:s|es)?\b" if re.search(r"\w$", tokens[-1]) else ""
        return f"{head}{body}{tail}"


@dataclass(frozen=True)
class Lexicon:
    """The phrases of one language; build it with `lexicon()`."""

    language: str
    phrases: tuple[Phrase, ...]

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        # One alternation; Python's regex takes the first alternative that matches at a position, so the
        # longest phrases come first and the leftmost-longest match wins.
        if not self._ordered:
            return None
        return re.compile("|".join(f"(?P<p{i}>{p.pattern()})" for i, p in enumerate(self._ordered)), re.IGNORECASE)

    @cached_property
    def _ordered(self) -> tuple[Phrase, ...]:
        return tuple(sorted(self.phrases, key=lambda p: (-len(p.words), p.text)))

    def find(self, text: str) -> list[tuple[Phrase, int, int]]:
        """Non-overlapping (phrase, start, end) in the text, leftmost then longest."""
        if self._regex is None:
            return []
        found = []
        for match in self._regex.finditer(text):
            index = int(match.lastgroup[1:])
            found.append((self._ordered[index], match.start(), match.end()))
        return found


def lexicon(language: str = DEFAULT_LANGUAGE, entries: Iterable[tuple[str, str]] = ()) -> Lexicon:
    """The built-in phrases of `language` (none for a language without defaults) with `entries`
    (phrase, label) added on top; an entry for a built-in phrase replaces its label."""
    merged: dict[str, str] = {}
    for label, phrases in DEFAULT_LEXICONS.get(language, {}).items():
        for phrase in phrases:
            merged[normalise_phrase(phrase)] = label
    for phrase, label in entries:
        if label not in PHRASE_LABELS:
            raise ValueError(f"unknown phrase label {label!r}; use one of {', '.join(PHRASE_LABELS)}")
        key = normalise_phrase(phrase)
        if key:
            merged[key] = label
    return Lexicon(language, tuple(Phrase(text, label) for text, label in merged.items()))


@dataclass(frozen=True)
class Match:
    """A change phrase found in a report and how its cues read it."""

    label: str
    phrase: str  # as written in the report
    start: int
    end: int
    negated: bool = False
    uncertain: bool = False

    @property
    def confident(self) -> bool:
        return not self.negated and not self.uncertain


@dataclass(frozen=True)
class Extraction:
    """A report's label and the span of the phrase that decided it (start/end index the report text)."""

    label: str
    phrase: str = ""
    start: int | None = None
    end: int | None = None
    matches: tuple[Match, ...] = ()


def _clause_ids(text: str) -> list[int]:
    """For each character (and one past the end), the number of the clause it belongs to."""
    ids = [0] * (len(text) + 1)
    clause = 0
    last = 0
    for br in _CLAUSE_BREAK.finditer(text):
        # The break itself closes the clause before it, so a trailing "?" can hedge that clause.
        for i in range(last, br.end()):
            ids[i] = clause
        clause += 1
        last = br.end()
    for i in range(last, len(text) + 1):
        ids[i] = clause
    return ids


def _words_between(text: str, start: int, end: int) -> int:
    return len(_WORD.findall(text[start:end])) if end > start else 0


def extract(text: str, lex: Lexicon) -> Extraction:
    """The change a report describes, with every change phrase found and how its cues read it."""
    found = lex.find(text)
    clauses = _clause_ids(text)
    cues = [(p, s, e) for p, s, e in found if p.label in CUE_LABELS]
    matches: list[Match] = []
    for phrase, start, end in found:
        if phrase.label not in CHANGE_LABELS:
            continue
        negated = uncertain = False
        for cue, cue_start, cue_end in cues:
            if cue.follows:
                in_scope = cue_start >= end and clauses[cue_start] == clauses[end - 1]
                distance = _words_between(text, end, cue_start)
            else:
                in_scope = cue_end <= start and clauses[cue_end - 1] == clauses[start]
                distance = _words_between(text, cue_end, start)
            if in_scope and distance <= CUE_WINDOW:
                negated |= cue.label == NEGATION
                uncertain |= cue.label == UNCERTAINTY
        matches.append(Match(phrase.label, text[start:end], start, end, negated, uncertain))
    return Extraction(*_decide(matches), matches=tuple(matches))


def _decide(matches: list[Match]) -> tuple[str, str, int | None, int | None]:
    confident = [m for m in matches if m.confident]
    labels = {m.label for m in confident}
    if PROGRESSION in labels and REGRESSION in labels:
        first = confident[0] if confident[0].label != STABLE else next(m for m in confident if m.label != STABLE)
        return PARTIAL, first.phrase, first.start, first.end
    for label in (PARTIAL, PROGRESSION, REGRESSION, STABLE):
        if label in labels:
            chosen = next(m for m in confident if m.label == label)
            return label, chosen.phrase, chosen.start, chosen.end
    hedged = [m for m in matches if m.uncertain and not m.negated]
    if hedged:
        return UNCERTAIN, hedged[0].phrase, hedged[0].start, hedged[0].end
    return NONE, "", None, None


def extract_with(text: str, language: str = DEFAULT_LANGUAGE, entries: Mapping[str, str] | None = None) -> Extraction:
    """Shortcut: extract with the built-in lexicon of `language` plus {phrase: label} entries."""
    return extract(text, lexicon(language, (entries or {}).items()))
