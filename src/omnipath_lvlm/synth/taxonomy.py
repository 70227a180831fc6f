"""The vocabulary of the SynthPath world: organs, subtypes, grades, classes, materials.

Everything here is immutable (tuples, frozen mappings, an IntEnum) so that the
generators can share it without module-level mutable state.

Organs use the spelling of the task registry (table 13 of the paper).  Each
organ has three tumour subtypes, one per *architecture* the renderer can draw:

* ``glandular`` - tumour glands: rings of tumour cells around small lumens,
* ``solid``     - sheets/nests of tumour cells split by thin stroma septa,
* ``papillary`` - thin stromal fronds lined by tumour cells, floating in spaces.

The subtype answer is the organ-specific name of that architecture, so the
model must see both the organ (background architecture and colour) and the
tumour pattern to name it.
"""
from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType
from typing import Mapping

ORGANS: tuple[str, ...] = ("Liver", "Lung", "Kidney", "Colon")
LYMPH_NODE_ORGAN = "Lymph Node"  # the organ label of a patch showing only a lymph node

ARCHITECTURES: tuple[str, ...] = ("glandular", "solid", "papillary")

# organ -> architecture -> subtype name
SUBTYPES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "Liver": MappingProxyType(
            {
                "glandular": "pseudoglandular hepatocellular carcinoma",
                "solid": "solid hepatocellular carcinoma",
                "papillary": "trabecular hepatocellular carcinoma",
            }
        ),
        "Lung": MappingProxyType(
            {
                "glandular": "acinar adenocarcinoma",
                "solid": "solid adenocarcinoma",
                "papillary": "papillary adenocarcinoma",
            }
        ),
        "Kidney": MappingProxyType(
            {
                "glandular": "tubulocystic renal cell carcinoma",
                "solid": "clear cell renal cell carcinoma",
                "papillary": "papillary renal cell carcinoma",
            }
        ),
        "Colon": MappingProxyType(
            {
                "glandular": "tubular adenocarcinoma",
                "solid": "medullary carcinoma",
                "papillary": "papillary adenocarcinoma",
            }
        ),
    }
)

# organ -> disease name when a tumour is present ("normal" otherwise)
DISEASES: Mapping[str, str] = MappingProxyType(
    {
        "Liver": "hepatocellular carcinoma",
        "Lung": "lung adenocarcinoma",
        "Kidney": "renal cell carcinoma",
        "Colon": "colorectal adenocarcinoma",
    }
)
NORMAL_DISEASE = "normal tissue"

GRADES: tuple[int, ...] = (1, 2, 3)
GRADE_NAMES: Mapping[int, str] = MappingProxyType(
    {1: "well differentiated", 2: "moderately differentiated", 3: "poorly differentiated"}
)

# Nucleus classes (objects of kind "nucleus").
NUCLEUS_CLASSES: tuple[str, ...] = ("tumour", "epithelial", "lymphocyte", "stromal", "mitosis")
# Structure classes (objects of kind "structure").
STRUCTURE_CLASSES: tuple[str, ...] = ("tumour_region", "vessel", "nerve", "lymph_node")
# Names of the region masks a patch carries.
REGIONS: tuple[str, ...] = ("tumour", "vessel", "nerve", "lymph_node", "metastasis", "invasion")
# Patch-level tissue types (answers of the tissue_type task).
TISSUE_TYPES: tuple[str, ...] = ("tumour", "normal", "stroma", "lymphocytes", "adipose", "necrosis")

# Patch kinds generate_patch can draw; each decides which tasks apply.
PATCH_KINDS: tuple[str, ...] = (
    "tumour",
    "normal",
    "vessel",
    "nerve",
    "lymph_node",
    "stroma",
    "adipose",
    "necrosis",
    "lymphocytes",
)

# Tasks (registry names) whose answer is a class name / yes-no, kept in SynthPatch.labels.
LABEL_TASKS: tuple[str, ...] = (
    "organ",
    "disease",
    "subtype",
    "grade",
    "tissue_type",
    "til",
    "mvi",
    "neural_invasion",
    "lymph_node_metastasis",
)
# Tasks answered with boxes, detections or masks, derived from objects / region masks.
GEOMETRY_TASKS: tuple[str, ...] = (
    "vessel_detection",
    "nerve_detection",
    "lymph_node_detection",
    "nerve_segmentation",
    "cancer_nuclei_in_vessel",
    "cancer_in_nerve_segmentation",
    "cancer_in_lymph_node_segmentation",
    "nucleus_detection",
    "nucleus_classification",
    "cancer_detection",
    "cancer_segmentation",
)


class Material(IntEnum):
    """What a pixel is made of; the palette maps each to stain densities."""

    BACKGROUND = 0  # glass
    STROMA = 1  # collagen
    FAT = 2  # adipocyte interior (empty)
    FAT_SEPTUM = 3  # adipocyte membranes
    ORGAN_EPI = 4  # organ parenchyma cells (hepatocytes, tubules, crypts, alveolar septa)
    ORGAN_LUMEN = 5  # organ spaces (alveoli, tubule/crypt lumens, sinusoids)
    ORGAN_STROMA = 6  # interstitium / lamina propria
    GLOMERULUS = 7  # kidney glomerular tuft
    TUMOUR_EPI = 8  # tumour cells
    TUMOUR_LUMEN = 9  # gland lumens and papillary spaces inside a tumour
    TUMOUR_STROMA = 10  # desmoplastic stroma / papillary cores inside a tumour
    NECROSIS = 11
    LYMPHOID = 12  # lymph node cortex / lymphocyte sheets
    FOLLICLE = 13  # germinal centre (paler)
    CAPSULE = 14  # lymph node capsule
    VESSEL_WALL = 15
    ENDOTHELIUM = 16  # thin lining of a vessel lumen
    VESSEL_LUMEN = 17  # blood-filled lumen
    NERVE = 18
    PERINEURIUM = 19


N_MATERIALS = len(Material)
