"""Synthetic patches: determinism, labels per kind, and ground truth consistent with the pixels."""
from __future__ import annotations

import numpy as np
import pytest

from omnipath_lvlm.synth.palette import BACKGROUND_RGB
from omnipath_lvlm.synth.patches import generate_patch
from omnipath_lvlm.synth.taxonomy import (
    GRADE_NAMES,
    LABEL_TASKS,
    NUCLEUS_CLASSES,
    ORGANS,
    PATCH_KINDS,
    REGIONS,
    SUBTYPES,
    TISSUE_TYPES,
)
from omnipath_lvlm.synth.taxonomy import Material as M

SIZE = 192


@pytest.fixture(scope="module")
def vessel_patches():
    return [generate_patch(s, SIZE, "vessel") for s in range(8)]


def test_same_seed_same_patch_different_seed_different():
    a, b, c = generate_patch(11, 128), generate_patch(11, 128), generate_patch(12, 128)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.labels == b.labels and a.kind == b.kind
    assert not np.array_equal(a.image, c.image)


def test_image_shape_dtype_and_not_blank():
    p = generate_patch(3, SIZE, "tumour")
    assert p.image.shape == (SIZE, SIZE, 3) and p.image.dtype == np.uint8
    assert p.image.std() > 20  # textured, not a flat colour
    # eosin-pink on average (red above green), haematoxylin-dark nuclei present
    assert p.image[..., 0].mean() > p.image[..., 1].mean()
    assert (p.image.sum(axis=2) < 330).mean() > 0.02


def test_size_changes_resolution_not_content():
    small, large = generate_patch(21, 96), generate_patch(21, 192)
    assert small.kind == large.kind and small.scene == large.scene
    assert small.labels.get("organ") == large.labels.get("organ")


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown patch kind"):
        generate_patch(0, 64, "bone")


@pytest.mark.parametrize("kind", PATCH_KINDS)
def test_every_kind_has_its_tasks_and_valid_answers(kind):
    p = generate_patch(5, SIZE, kind)
    assert p.kind == kind
    assert set(p.region_masks) >= set(REGIONS)
    assert all(m.shape == (SIZE, SIZE) and m.dtype == bool for m in p.region_masks.values())
    assert set(p.labels) <= set(LABEL_TASKS)
    assert "nucleus_detection" in p.tasks
    if "organ" in p.labels:
        assert p.labels["organ"] in (*ORGANS, "Lymph Node")
    if "tissue_type" in p.labels:
        assert p.labels["tissue_type"] in TISSUE_TYPES
    expected = {"vessel": "mvi", "nerve": "neural_invasion", "lymph_node": "lymph_node_metastasis", "tumour": "til"}
    if kind in expected:
        assert p.labels[expected[kind]] in ("yes", "no")
    if kind in ("stroma", "adipose", "necrosis", "lymphocytes"):
        assert p.labels["tissue_type"] == {"adipose": "adipose", "stroma": "stroma", "necrosis": "necrosis",
                                           "lymphocytes": "lymphocytes"}[kind]


def test_tumour_patch_labels_match_its_scene():
    p = generate_patch(8, SIZE, "tumour")
    spec, organ = p.scene.tumour, p.scene.organ
    assert p.labels["organ"] == organ
    assert p.labels["subtype"] == SUBTYPES[organ][spec.architecture]
    assert p.labels["grade"] == GRADE_NAMES[spec.grade]
    assert p.labels["til"] == ("yes" if spec.til else "no")
    assert p.region_masks["tumour"].mean() > 0.15
    target = p.target("cancer_segmentation")
    np.testing.assert_array_equal(target.mask, p.region_masks["tumour"])
    boxes = p.target("cancer_detection").boxes
    assert boxes and all(0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE for x1, y1, x2, y2 in boxes)


def test_nucleus_boxes_are_tight_around_their_masks_and_classes_valid():
    p = generate_patch(4, SIZE, "tumour")
    nuclei = p.nuclei
    assert len(nuclei) > 30
    seen = np.zeros((SIZE, SIZE), int)
    for o in nuclei:
        x1, y1, x2, y2 = o.box
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        assert o.mask.shape == (y2 - y1, x2 - x1) and o.mask.dtype == bool
        # exclusive x2/y2: the mask touches all four sides of its box
        assert o.mask[0].any() and o.mask[-1].any() and o.mask[:, 0].any() and o.mask[:, -1].any()
        assert o.cls in NUCLEUS_CLASSES
        seen += o.full_mask((SIZE, SIZE))
    assert seen.max() == 1  # instance masks do not overlap
    # nuclei are dark: their pixels are darker than the patch on average
    dark = p.image.astype(int).sum(axis=2)
    assert dark[seen == 1].mean() < dark[seen == 0].mean() - 60


def test_nuclei_are_big_enough_at_384():
    p = generate_patch(2, 384, "lymphocytes")
    diameters = [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in p.nuclei if o.cls == "lymphocyte"]
    assert len(diameters) > 200
    assert np.median(diameters) >= 6


def test_grade_shows_in_nuclear_size():
    def tumour_area(seed):
        p = generate_patch(seed, SIZE, "tumour")
        areas = [o.mask.sum() for o in p.nuclei if o.cls == "tumour"]
        return p.scene.tumour.grade, float(np.median(areas))

    by_grade = {}
    for seed in range(12):
        g, a = tumour_area(seed)
        by_grade.setdefault(g, []).append(a)
    assert set(by_grade) == {1, 2, 3}
    means = {g: np.mean(v) for g, v in by_grade.items()}
    assert means[1] < means[2] < means[3]


def test_mvi_positive_vessels_hold_tumour_nuclei_and_negatives_do_not(vessel_patches):
    answers = set()
    for p in vessel_patches:
        lumen = p.region_masks["vessel_lumen"]
        inside = [o for o in p.nuclei if o.cls in ("tumour", "mitosis") and (o.full_mask(lumen.shape) & lumen).any()]
        answers.add(p.labels["mvi"])
        if p.labels["mvi"] == "yes":
            assert len(inside) >= 2, p.seed
            assert p.region_masks["invasion"].any()
            assert (p.region_masks["invasion"] <= p.region_masks["vessel"]).all()
            assert len(p.target("cancer_nuclei_in_vessel").boxes) >= 1
        else:
            assert not inside, p.seed
            assert not p.region_masks["invasion"].any()
            assert p.target("cancer_nuclei_in_vessel").boxes == []
        # every vessel is an object with a box inside the patch
        assert len(p.structures("vessel")) == len(p.scene.vessels) >= 1
    assert answers == {"yes", "no"}


def test_vessel_lumen_holds_red_cells(vessel_patches):
    p = vessel_patches[0]
    lumen = p.region_masks["vessel_lumen"] & (p.material == M.VESSEL_LUMEN)
    rgb = p.image[lumen].astype(int)
    red_like = (rgb[:, 0] > rgb[:, 1] + 60) & (rgb[:, 0] > rgb[:, 2] + 40)
    assert red_like.mean() > 0.3


def test_neural_invasion_and_metastasis_masks_are_inside_their_structures():
    answers = {"neural_invasion": set(), "lymph_node_metastasis": set()}
    for seed in range(6):
        n = generate_patch(seed, SIZE, "nerve")
        answers["neural_invasion"].add(n.labels["neural_invasion"])
        inv = n.target("cancer_in_nerve_segmentation").mask
        assert (inv <= n.region_masks["nerve"]).all()
        assert inv.any() == (n.labels["neural_invasion"] == "yes")
        assert n.region_masks["nerve"].any() and n.target("nerve_segmentation").mask.any()
        ln = generate_patch(seed, SIZE, "lymph_node")
        answers["lymph_node_metastasis"].add(ln.labels["lymph_node_metastasis"])
        met = ln.target("cancer_in_lymph_node_segmentation").mask
        assert (met <= ln.region_masks["lymph_node"]).all()
        assert met.any() == (ln.labels["lymph_node_metastasis"] == "yes")
        assert len(ln.target("lymph_node_detection").boxes) == 1
    assert answers == {"neural_invasion": {"yes", "no"}, "lymph_node_metastasis": {"yes", "no"}}


def test_background_pixels_are_glass_coloured():
    # normal patches sometimes show a tissue edge; where the material is glass the pixel is the glass colour
    for seed in range(12):
        p = generate_patch(seed, 128, "normal")
        glass = p.material == M.BACKGROUND
        if glass.sum() > 200:
            inner = glass.copy()
            inner[1:-1, 1:-1] &= glass[:-2, 1:-1] & glass[2:, 1:-1] & glass[1:-1, :-2] & glass[1:-1, 2:]
            diff = np.abs(p.image[inner].astype(int) - np.array(BACKGROUND_RGB)).max(axis=1)
            assert np.percentile(diff, 95) <= 3
            return
    pytest.fail("no normal patch among 12 showed a tissue edge")


def test_target_rejects_tasks_that_do_not_apply():
    p = generate_patch(1, 96, "adipose")
    with pytest.raises(KeyError, match="does not apply"):
        p.target("vessel_detection")
