"""`maskvlp ablate`: every combination trained and evaluated alike, summarised, and resumable."""
from __future__ import annotations

import json

import pytest

from conftest import TINY
from maskvlp.ablate import parse_seeds, run_ablation
from maskvlp.config import ConfigError


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("2") == [0, 1] and parse_seeds("0,3") == [0, 3] and parse_seeds("5,") == [5]
    for bad in ("0", "x", "1,1", ","):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_ablation_table_spread_and_reuse(tmp_path):
    out = tmp_path / "ablate"
    overrides = [*TINY, "train.max_steps=2", "eval.itm_k=2"]
    summary = run_ablation(["clip", "albef"], ["scratch"], [0, 1], 0, str(out), overrides, show_progress=False)
    assert set(summary) == {"clip / scratch / itc", "albef / scratch / itc", "albef / scratch / itm k=2"}
    entry = summary["albef / scratch / itm k=2"]
    assert entry["seeds"] == 2 and len(entry["img_r1"]["values"]) == 2
    assert entry["steps"]["values"] == [2, 2]  # read back from each run's metrics.jsonl
    values = entry["binding_colour"]["values"]
    assert abs(entry["binding_colour"]["spread"] - (max(values) - min(values))) < 1e-9
    table = (out / "ablation.md").read_text()
    assert "| albef | scratch | itm k=2 |" in table and " ± " in table
    assert (out / "ablation.png").stat().st_size > 1000
    assert json.loads((out / "ablation.json").read_text()).keys() == summary.keys()
    stamp = (out / "clip-scratch-s1" / "eval" / "results.json").stat().st_mtime_ns
    run_ablation(["clip"], ["scratch"], [1], 0, str(out), overrides, show_progress=False)  # finished: reused
    assert (out / "clip-scratch-s1" / "eval" / "results.json").stat().st_mtime_ns == stamp
