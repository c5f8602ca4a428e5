"""What a class name means, in codes a PACS and 3D Slicer understand, and the colour to draw it in.

Each known class name maps to a segmented-property category and type (SNOMED CT codes from DICOM PS3.16, as pydicom's
``codes.SCT`` ships them), an optional laterality modifier, and the recommended display colour of 3D Slicer's
"General Anatomy" terminology (the same RGB values as Slicer's GenericAnatomyColors table). Unknown names get the
generic category/type "Tissue" (SCT 85756007, what Slicer assigns to an auto-generated segment) and a colour from a
deterministic palette. Sources and the table itself are listed in docs/outputs.md.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass

SCT = "SCT"


@dataclass(frozen=True)
class Concept:
    """One coded concept: (coding scheme, code value, code meaning)."""

    value: str
    meaning: str
    scheme: str = SCT

    def slicer(self) -> str:
        """``scheme^value^meaning``, the triplet form of Slicer's ``TerminologyEntry`` tag."""
        return f"{self.scheme}^{self.value}^{self.meaning}"


# Segmented property categories (DICOM CID 7150).
TISSUE = Concept("85756007", "Tissue")
ANATOMICAL_STRUCTURE = Concept("91723000", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = Concept("49755003", "Morphologically Abnormal Structure")
# Laterality modifiers (DICOM CID 244).
LEFT = Concept("7771000", "Left")
RIGHT = Concept("24028007", "Right")

# Slicer's General Anatomy terminology files the anatomical category under the older code 123037004; its
# ``TerminologyEntry`` tags must carry Slicer's codes so that Slicer finds the entry in its list.
SLICER_CATEGORY = {ANATOMICAL_STRUCTURE.value: Concept("123037004", "Anatomical Structure")}
SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
SLICER_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Term:
    """What one segment is: category, type, optional type modifier (laterality), display colour (RGB 0-255)."""

    category: Concept
    type: Concept
    colour: tuple[int, int, int]
    modifier: Concept | None = None
    known: bool = True

    def slicer_terminology_entry(self) -> str:
        """The value of a Slicer ``SegmentN_Tags`` ``TerminologyEntry`` (7 parts separated by ``~``)."""
        category = SLICER_CATEGORY.get(self.category.value, self.category)
        modifier = self.modifier.slicer() if self.modifier else "^^"
        return f"{SLICER_CONTEXT}~{category.slicer()}~{self.type.slicer()}~{modifier}~{SLICER_ANATOMIC_CONTEXT}~^^~^^"


def _organ(value: str, meaning: str, colour: tuple[int, int, int], modifier: Concept | None = None) -> Term:
    return Term(ANATOMICAL_STRUCTURE, Concept(value, meaning), colour, modifier)


def _abnormal(value: str, meaning: str, colour: tuple[int, int, int]) -> Term:
    return Term(MORPHOLOGICALLY_ABNORMAL, Concept(value, meaning), colour)


_NEOPLASM = _abnormal("108369006", "Neoplasm", (144, 238, 144))  # colour: Slicer's "mass"
_KIDNEY = ("64033007", "Kidney", (185, 102, 83))
_LUNG = ("39607008", "Lung", (197, 165, 145))
_ADRENAL = ("23451007", "Adrenal gland", (249, 186, 150))
_HIPPOCAMPUS = ("5366008", "Hippocampus", (220, 216, 20))  # not in Slicer's list: FreeSurfer's hippocampus colour

# Normalised class name (lower case, words separated by one space) -> term. Synonyms share a term.
TERMS: dict[str, Term] = {
    "liver": _organ("10200004", "Liver", (221, 130, 101)),
    "spleen": _organ("78961009", "Spleen", (157, 108, 162)),
    "pancreas": _organ("15776009", "Pancreas", (249, 180, 111)),
    "kidney": _organ(*_KIDNEY),
    "kidneys": _organ(*_KIDNEY),
    "left kidney": _organ(*_KIDNEY, LEFT),
    "kidney left": _organ(*_KIDNEY, LEFT),
    "right kidney": _organ(*_KIDNEY, RIGHT),
    "kidney right": _organ(*_KIDNEY, RIGHT),
    "prostate": _organ("41216001", "Prostate", (230, 158, 140)),
    "gallbladder": _organ("28231008", "Gallbladder", (139, 150, 98)),
    "stomach": _organ("69695003", "Stomach", (216, 132, 105)),
    "esophagus": _organ("32849002", "Esophagus", (211, 171, 143)),
    "oesophagus": _organ("32849002", "Esophagus", (211, 171, 143)),
    "duodenum": _organ("38848004", "Duodenum", (255, 253, 229)),
    "colon": _organ("71854001", "Colon", (204, 168, 143)),
    "small bowel": _organ("30315005", "Small intestine", (205, 167, 142)),
    "small intestine": _organ("30315005", "Small intestine", (205, 167, 142)),
    "aorta": _organ("15825003", "Aorta", (224, 97, 76)),
    "inferior vena cava": _organ("64131007", "Inferior vena cava", (0, 151, 206)),  # colour: Slicer's "vein"
    "ivc": _organ("64131007", "Inferior vena cava", (0, 151, 206)),
    "portal vein": _organ("32764006", "Portal vein", (0, 151, 206)),
    "bladder": _organ("89837001", "Bladder", (222, 154, 132)),
    "urinary bladder": _organ("89837001", "Bladder", (222, 154, 132)),
    "heart": _organ("80891009", "Heart", (206, 110, 84)),
    "lung": _organ(*_LUNG),
    "lungs": _organ(*_LUNG),
    "left lung": _organ(*_LUNG, LEFT),
    "right lung": _organ(*_LUNG, RIGHT),
    "trachea": _organ("44567001", "Trachea", (182, 228, 255)),
    "thyroid": _organ("69748006", "Thyroid", (62, 162, 114)),
    "thyroid gland": _organ("69748006", "Thyroid", (62, 162, 114)),
    "uterus": _organ("35039007", "Uterus", (255, 181, 158)),
    "adrenal gland": _organ(*_ADRENAL),
    "left adrenal gland": _organ(*_ADRENAL, LEFT),
    "right adrenal gland": _organ(*_ADRENAL, RIGHT),
    "spinal cord": _organ("2748008", "Spinal cord", (244, 214, 49)),
    "brain": _organ("12738006", "Brain", (250, 250, 225)),
    "brainstem": _organ("119238007", "Brain Stem", (145, 92, 109)),  # colour: Slicer's "midbrain"
    "brain stem": _organ("119238007", "Brain Stem", (145, 92, 109)),
    "cerebellum": _organ("113305005", "Cerebellum", (194, 195, 164)),
    "white matter": _organ("389080008", "White Matter", (250, 250, 210)),
    "gray matter": _organ("389081007", "Gray Matter", (200, 200, 235)),
    "grey matter": _organ("389081007", "Gray Matter", (200, 200, 235)),
    "lateral ventricle": _organ("66720007", "Lateral Ventricle", (88, 106, 215)),
    "hippocampus": _organ(*_HIPPOCAMPUS),
    "left hippocampus": _organ(*_HIPPOCAMPUS, LEFT),
    "right hippocampus": _organ(*_HIPPOCAMPUS, RIGHT),
    "bone": Term(TISSUE, Concept("272673000", "Bone"), (241, 214, 145)),
    "muscle": Term(TISSUE, Concept("71616004", "Muscle"), (192, 104, 88)),
    "tumor": _NEOPLASM,
    "tumour": _NEOPLASM,
    "neoplasm": _NEOPLASM,
    "cancer": _NEOPLASM,
    "enhancing tumor": _NEOPLASM,
    "enhancing tumour": _NEOPLASM,
    "lesion": _abnormal("52988006", "Lesion", (144, 238, 144)),
    "mass": _abnormal("4147007", "Mass", (144, 238, 144)),
    "cyst": _abnormal("367643001", "Cyst", (205, 205, 100)),
    "edema": _abnormal("79654002", "Edema", (140, 224, 228)),
    "oedema": _abnormal("79654002", "Edema", (140, 224, 228)),
    "necrosis": _abnormal("6574001", "Necrosis", (216, 191, 216)),
    "hemorrhage": _abnormal("50960005", "Hemorrhage", (188, 65, 28)),
    "haemorrhage": _abnormal("50960005", "Hemorrhage", (188, 65, 28)),
}

# A name ending in one of these words ("liver tumour", "kidney cyst") takes that word's term.
_SUFFIX_TERMS = ("tumor", "tumour", "lesion", "cancer", "neoplasm", "cyst", "edema", "oedema", "necrosis")


def normalise(name: str) -> str:
    """``"Kidney_Left"`` -> ``"kidney left"``: lower case, words split on anything that is not a letter/digit."""
    return " ".join(re.split(r"[^0-9a-z]+", name.lower())).strip()


def fallback_colour(label: int) -> tuple[int, int, int]:
    """A deterministic, well-spread colour for label ``label``: hues stepped by the golden ratio, fixed saturation
    and value (so neighbouring labels differ, and the same label always gets the same colour)."""
    hue = (label * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return round(red * 255), round(green * 255), round(blue * 255)


def segment_term(name: str, label: int) -> Term:
    """The term for class ``name`` (label value ``label``): a known entry of :data:`TERMS` (also for names such as
    "liver tumour" whose last word is a lesion type), else the generic "Tissue" with a palette colour."""
    key = normalise(name)
    if key in TERMS:
        return TERMS[key]
    last = key.rsplit(" ", 1)[-1]
    if last in _SUFFIX_TERMS:
        return TERMS[last]
    return Term(TISSUE, TISSUE, fallback_colour(label), known=False)
