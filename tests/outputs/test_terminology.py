"""The code table agrees with DICOM PS3.16 as pydicom ships it; names resolve; unknown names get a generic code."""

from collections import defaultdict

from pydicom.sr._concepts_dict import concepts

from medattn3d.outputs.terminology import LEFT, TERMS, TISSUE, fallback_colour, normalise, segment_term

SNOMED: dict[str, set[str]] = defaultdict(set)
for _name, entries in concepts["SCT"].items():
    for value, (meaning, _cids) in entries.items():
        SNOMED[value].add(meaning.lower())


def test_every_code_is_a_dicom_snomed_code_with_that_meaning():
    for name, term in TERMS.items():
        for concept in filter(None, (term.category, term.type, term.modifier)):
            assert concept.value in SNOMED, f"{name}: {concept} not in DICOM's SNOMED CT codes"
            assert concept.meaning.lower() in SNOMED[concept.value], (
                f"{name}: {concept} has meanings {SNOMED[concept.value]}"
            )


def test_names_resolve_with_synonyms_laterality_and_lesion_suffixes():
    assert normalise("Kidney_Left") == "kidney left"
    assert segment_term("Kidney_Left", 2).modifier == LEFT
    assert segment_term("liver tumour", 2).type.meaning == "Neoplasm"
    assert segment_term("Spleen", 1).type.value == "78961009"


def test_unknown_names_get_tissue_and_a_stable_distinct_colour():
    term = segment_term("flux capacitor", 7)
    assert (term.category, term.type, term.known) == (TISSUE, TISSUE, False)
    assert term.colour == fallback_colour(7) == segment_term("flux capacitor", 7).colour
    assert len({fallback_colour(k) for k in range(1, 30)}) == 29
