"""Grounding's metric and files: ALBEF's IoU and box choice on hand-made boxes and maps, the floors, and the
RefCOCO+ files (ALBEF's lists, the REFER refs pickle, COCO instances, dets) with one-line errors."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from maskvlp.data.datasets import DataFormatError
from maskvlp.data.tasks.examples import GroundingExample
from maskvlp.data.tasks.refcoco_files import ReferFolder, read_grounding_test, read_refs
from maskvlp.eval.grounding_metric import box_scores, choose_box, floor_hits, iou, map_at_image_size
from maskvlp.tasks.grounding import report


@pytest.mark.parametrize("a, b, want", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150),  # inclusive corners: x 5..9, y 0..9 -> 5 x 10
    ((0, 0, 10, 10), (20, 20, 5, 5), 0.0),
    ((0, 0, 10, 10), (9, 0, 10, 10), 0.0),  # ALBEF's strict x1 < x2: a one-pixel overlap counts as none
    ((0, 0, 4, 4), (1, 1, 2, 2), 4 / 16),  # inside: x 1..2, y 1..2 -> 2 x 2, union 16 + 4 - 4
])
def test_iou_is_albefs(a, b, want):
    assert iou(a, b) == pytest.approx(want)
    assert iou(b, a) == pytest.approx(want)


def test_box_score_is_the_sum_inside_over_area_to_the_alpha():
    heat = torch.zeros(10, 10)
    heat[2:4, 2:4] = 1.0  # 4 units of evidence in a 2 x 2 patch
    tight, whole = (2, 2, 2, 2), (0, 0, 10, 10)
    assert box_scores(heat, [tight, whole], alpha=0.5) == pytest.approx([4 / 2, 4 / 10])
    assert choose_box(heat, [whole, tight], alpha=0.5) == 1
    assert box_scores(heat, [tight, whole], alpha=0.0) == pytest.approx([4.0, 4.0])
    assert choose_box(heat, [whole, tight], alpha=0.0) == 0  # a tie keeps the first, as ALBEF's strict ">"
    assert box_scores(heat, [(2.7, 2.9, 1.0, 1.0)], alpha=0.0) == pytest.approx([1.0])  # rows 2:3, columns 2:3


def test_the_map_is_resized_to_the_images_own_size():
    cam = torch.zeros(4, 4)
    cam[0, 3] = 1.0  # top right patch
    heat = map_at_image_size(cam, 30, 60)
    assert heat.shape == (30, 60)
    assert choose_box(heat, [(0, 0, 15, 8), (45, 0, 15, 8), (0, 22, 15, 8)]) == 1


def test_floors_on_hand_made_boxes():
    truth = (0, 0, 10, 10)
    candidates = [(0, 0, 10, 10), (40, 40, 20, 20), (45, 45, 10, 10), (0, 1, 10, 10)]  # 2 hits of 4
    floors = floor_hits(truth, candidates, width=100, height=100)
    assert floors == {"random_box": 0.5, "largest_box": 0.0, "centre_box": 0.0}
    assert floor_hits((40, 40, 20, 20), candidates, 100, 100) == {"random_box": 0.25, "largest_box": 1.0,
                                                                 "centre_box": 1.0}


def test_report_counts_hits_at_iou_half_and_per_kind():
    examples = [
        GroundingExample(0, 0, "a", (0, 0, 10, 10), ((0, 0, 10, 10), (50, 50, 10, 10)), kind="attributes", confused=True),
        GroundingExample(1, 0, "b", (50, 50, 10, 10), ((0, 0, 10, 10), (50, 50, 10, 10)), kind="relation"),
        GroundingExample(2, 0, "c", (0, 0, 10, 10), ((0, 0, 10, 10), (3, 0, 10, 10)), kind="relation"),
    ]
    predictions = {0: ((0, 0, 10, 10), (64, 64)), 1: ((0, 0, 10, 10), (64, 64)), 2: ((3, 0, 10, 10), (64, 64))}
    row = report(predictions, examples)  # hit, miss, and IoU 70 / 130 = 0.54: a hit
    assert row["accuracy"] == pytest.approx(200 / 3)
    assert row["attributes"] == 100.0 and row["relation"] == 50.0 and row["confused"] == 100.0
    assert row["random_box"] == pytest.approx(100 * (0.5 + 0.5 + 1.0) / 3)
    assert row["n"] == 3


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def _refer_folder(root: Path) -> Path:
    sub = root / "refcoco+"
    sub.mkdir(parents=True)
    refs = [{"ref_id": 7, "ann_id": 70, "image_id": 1, "split": "testA", "sentences": [{"sent": "left dog"}]},
            {"ref_id": 8, "ann_id": 80, "image_id": 2, "split": "val", "sentences": [{"sent": "man in red"}]}]
    (sub / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    instances = {"images": [{"id": 1, "height": 40, "width": 60}, {"id": 2, "height": 50, "width": 50}],
                 "annotations": [{"id": 70, "image_id": 1, "bbox": [1.5, 2, 10, 12]},
                                 {"id": 80, "image_id": 2, "bbox": [20, 20, 5, 5]}]}
    (sub / "instances.json").write_text(json.dumps(instances))
    dets = {"1": [[1, 2, 10, 12, 0.9], [30, 5, 10, 10, 0.8]], "2": [[20, 20, 5, 5, 0.7]]}
    (sub / "dets.json").write_text(json.dumps(dets))
    return root


def test_reads_albefs_refcoco_test_files_with_the_refer_folder(tmp_path):
    refer = ReferFolder(_refer_folder(tmp_path / "data"))
    test = tmp_path / "refcoco+_test.json"
    test.write_text(json.dumps([{"image": "coco/1.jpg", "text": "left dog", "ref_id": 7},
                                {"image": "coco/2.jpg", "text": "man in red", "ref_id": 8}]))
    examples = read_grounding_test([test], tmp_path / "images", refer)
    assert [e.ref_id for e in examples] == [7, 8] and [e.split for e in examples] == ["testA", "val"]
    assert examples[0].box == (1.5, 2.0, 10.0, 12.0)
    assert examples[0].candidates == ((1.0, 2.0, 10.0, 12.0), (30.0, 5.0, 10.0, 10.0))  # the score is dropped
    assert examples[0].image == str(tmp_path / "images" / "coco" / "1.jpg")


def test_entries_may_carry_their_own_boxes(tmp_path):
    test = tmp_path / "mine.json"
    test.write_text(json.dumps([{"image": "a.png", "text": "the cup", "ref_id": 3, "bbox": [0, 0, 5, 5],
                                 "candidates": [[0, 0, 5, 5], [9, 9, 3, 3]], "split": "val"}]))
    (example,) = read_grounding_test([test], tmp_path)
    assert example.split == "val" and example.candidates[1] == (9.0, 9.0, 3.0, 3.0)


@pytest.mark.parametrize("entry, needle", [
    ({"image": "a.png", "ref_id": 7}, 'entry 0: "text" must be a non-empty string'),
    ({"image": "a.png", "text": "x", "ref_id": 99}, 'entry 0: "ref_id" 99 is not in the refs file'),
    ({"image": "a.png", "text": "x", "ref_id": "7"}, 'entry 0: "ref_id" must be an integer'),
    ({"image": "a.png", "text": "x", "bbox": [0, 0, -1, 5], "candidates": [[0, 0, 1, 1]]}, 'width or height <= 0'),
    ({"image": "a.png", "text": "x", "bbox": [0, 0, 1, 1], "candidates": []}, '"candidates" must be a non-empty list'),
])
def test_bad_entries_get_one_line_errors_naming_file_entry_and_field(tmp_path, entry, needle):
    refer = ReferFolder(_refer_folder(tmp_path / "data"))
    test = tmp_path / "refcoco+_val.json"
    test.write_text(json.dumps([entry]))
    with pytest.raises(DataFormatError) as err:
        read_grounding_test([test], tmp_path, refer)
    message = str(err.value)
    assert needle in message and str(test) in message and "\n" not in message


def test_a_test_file_without_boxes_needs_the_refer_folder(tmp_path):
    test = tmp_path / "refcoco+_val.json"
    test.write_text(json.dumps([{"image": "a.png", "text": "x", "ref_id": 7}]))
    with pytest.raises(DataFormatError, match="task.refer_dir"):
        read_grounding_test([test], tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_the_refs_pickle_may_hold_plain_data_only(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "ann_id": 1, "image_id": 1, "split": "val", "x": _Evil()}]))
    with pytest.raises(DataFormatError, match="not a REFER refs pickle"):
        read_refs(path)
