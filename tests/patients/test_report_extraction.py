"""The report phrase extractor on a table of report sentences, with negation, hedging and partial change."""

from __future__ import annotations

import pytest

from patients import reports
from patients.reports import NONE, PARTIAL, PROGRESSION, REGRESSION, STABLE, UNCERTAIN, extract, extract_with, lexicon

# (report text, expected label, expected deciding phrase as written; "" when no label)
TABLE: list[tuple[str, str, str]] = [
    # progression
    ("Bilateral ground-glass opacities have increased in extent.", PROGRESSION, "increased"),
    ("Progression of the consolidation in the right lower lobe.", PROGRESSION, "Progression"),
    ("The lesions are enlarged compared with the prior scan.", PROGRESSION, "enlarged"),
    ("New ground-glass opacities in the left upper lobe.", PROGRESSION, "New ground-glass"),
    ("New lesions in both lower lobes.", PROGRESSION, "New lesions"),
    ("Findings have worsened since 3 March.", PROGRESSION, "worsened"),
    ("More extensive involvement of both lungs.", PROGRESSION, "More extensive"),
    ("Interval deterioration with diffuse opacities.", PROGRESSION, "deterioration"),
    ("The opacities are larger and denser.", PROGRESSION, "larger"),
    ("No pleural effusion. Consolidation has enlarged.", PROGRESSION, "enlarged"),
    ("No effusion, but the lesions increased.", PROGRESSION, "increased"),
    # regression
    ("The lesions were absorbed.", REGRESSION, "absorbed"),
    ("Ground-glass opacities have decreased.", REGRESSION, "decreased"),
    ("Marked improvement of the bilateral opacities.", REGRESSION, "improvement"),
    ("Consolidation largely resolved.", REGRESSION, "resolved"),
    ("Opacities are smaller than before.", REGRESSION, "smaller"),
    ("Less extensive ground-glass change.", REGRESSION, "Less extensive"),
    ("Improved, without new lesions.", REGRESSION, "Improved"),
    ("The lesions are fading.", REGRESSION, "fading"),
    ("Reduction of the consolidated areas.", REGRESSION, "Reduction"),
    ("Most opacities have disappeared.", REGRESSION, "disappeared"),
    # stable
    ("No significant change compared with the previous examination.", STABLE, "No significant change"),
    ("Findings essentially unchanged.", STABLE, "essentially unchanged"),
    ("The opacities are stable.", STABLE, "stable"),
    ("Appearance similar to prior.", STABLE, "similar to prior"),
    ("No interval change.", STABLE, "No interval change"),
    ("Lesions not significantly changed, no new lesions.", STABLE, "not significantly changed"),
    # partial
    ("The lesions are partially absorbed.", PARTIAL, "partially absorbed"),
    ("Consolidation partly resolved.", PARTIAL, "partly resolved"),
    ("Partial resolution of the ground-glass opacities.", PARTIAL, "Partial resolution"),
    ("Some lesions absorbed while new consolidation appeared in the right lower lobe.", PARTIAL, "absorbed"),
    ("Mixed response.", PARTIAL, "Mixed response"),
    ("Partially absorbed lesions, no new lesions.", PARTIAL, "Partially absorbed"),
    # negation: the phrase is cancelled
    ("No new lesions.", NONE, ""),
    ("No evidence of progression.", NONE, ""),
    ("Without enlargement of the known opacities.", NONE, ""),
    ("The opacities have not increased.", NONE, ""),
    ("Progression is not seen.", NONE, ""),
    ("Negative for new consolidation.", NONE, ""),
    ("New lesions ruled out.", NONE, ""),
    ("No sign of deterioration; no effusion.", NONE, ""),
    ("There are no new opacities and no pleural effusion.", NONE, ""),
    # uncertainty: hedged, not a confident label
    ("Possible progression of the ground-glass opacities.", UNCERTAIN, "progression"),
    ("New lesions cannot be excluded.", UNCERTAIN, "New lesions"),
    ("Cannot exclude new consolidation.", UNCERTAIN, "new consolidation"),
    ("The density may represent new infiltrates.", UNCERTAIN, "new infiltrates"),
    ("Questionable enlargement of the lesion.", UNCERTAIN, "enlargement"),
    ("Progression?", UNCERTAIN, "Progression"),
    # hedged next to a confident phrase: the confident one decides
    ("Opacities decreased; possible new lesion in the apex.", REGRESSION, "decreased"),
    # nothing said about a change
    ("Bilateral peripheral ground-glass opacities, typical of COVID-19 pneumonia.", NONE, ""),
    ("", NONE, ""),
]


def test_the_table_has_at_least_forty_sentences_with_negations():
    assert len(TABLE) >= 40
    assert sum(label == NONE for _, label, _ in TABLE) >= 8


@pytest.mark.parametrize(("text", "label", "phrase"), TABLE, ids=[t[:40] for t, _, _ in TABLE])
def test_extractor_reads_the_report_label_and_its_phrase(text, label, phrase):
    result = extract_with(text)
    assert (result.label, result.phrase) == (label, phrase)
    if phrase:
        assert text[result.start : result.end] == phrase  # the span indexes the original text


def test_a_negated_phrase_is_kept_as_a_match_marked_negated():
    result = extract_with("No new lesions.")
    assert [(m.label, m.phrase, m.negated) for m in result.matches] == [(PROGRESSION, "new lesions", True)]


def test_a_negation_reaches_at_most_the_cue_window():
    far = "No " + "very " * (reports.CUE_WINDOW + 1) + "enlarged lesion."
    near = "No " + "very " * (reports.CUE_WINDOW - 1) + "enlarged lesion."
    assert extract_with(far).label == PROGRESSION
    assert extract_with(near).label == NONE


def test_a_team_entry_overrides_a_builtin_phrase_and_adds_new_ones():
    assert extract_with("Lesions stable.").label == STABLE
    assert extract_with("Lesions stable.", entries={"stable": "progression"}).label == PROGRESSION
    assert extract_with("Opacities regrediert.").label == NONE
    assert extract_with("Opacities regrediert.", entries={"regrediert": "regression"}).label == REGRESSION


def test_another_language_uses_only_its_own_phrases_and_cues():
    german = lexicon(
        "de", [("größenprogredient", PROGRESSION), ("keine", reports.NEGATION), ("rückläufig", REGRESSION)]
    )
    assert extract("Infiltrate größenprogredient.", german).label == PROGRESSION
    assert extract("Keine größenprogredienten Infiltrate.", german).label == NONE
    assert extract("Infiltrate rückläufig.", german).label == REGRESSION
    assert extract("Lesions increased.", german).label == NONE  # no English phrases in a German lexicon


def test_a_cue_after_its_phrase_is_written_with_dots():
    lex = lexicon("en", [("... unlikely", reports.UNCERTAINTY)])
    assert extract("Progression unlikely.", lex).label == UNCERTAIN
    assert extract("Unlikely, progression.", lex).label == PROGRESSION


def test_an_unknown_label_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown phrase label 'worse'.*progression"):
        lexicon("en", [("bad", "worse")])


def test_labels_match_the_django_choices():
    from patients.choices import PhraseLabel, ReportLabel

    assert set(ReportLabel.values) == {PROGRESSION, REGRESSION, STABLE, PARTIAL, UNCERTAIN, NONE}
    assert set(PhraseLabel.values) == set(reports.PHRASE_LABELS)
