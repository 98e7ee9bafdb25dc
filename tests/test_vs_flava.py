"""benchmarks/vs_flava.py end to end at toy sizes: FLAVA and a maskvlp recipe built, stepped, measured, written."""
from __future__ import annotations

import json
import math
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_vs_flava_writes_a_row_per_model(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling recipe_cost.py
    import vs_flava

    out = tmp_path / "vs_flava.json"
    vs_flava.main(["--models", "flava,albef", "--precisions", "fp32", "--rounds", "1", "--warmup", "1",
                   "--width", "32", "--heads", "2", "--image-layers", "1", "--text-layers", "1",
                   "--fusion-layers", "1", "--image-size", "32", "--patch", "8", "--batch-size", "4",
                   "--text-len", "16", "--peak-size", "256", "--output", str(out)])

    result = json.loads(out.read_text())
    (table,) = result["tables"]
    assert table["precision"] == "fp32"
    rows = {r["model"]: r for r in table["rows"]}
    assert list(rows) == ["flava", "albef"]
    assert rows["flava"]["ratio_to_flava"] == 1.0
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["gflop_per_step"] > 0
        assert math.isfinite(r["ratio_to_flava"]) and r["ratio_to_flava"] > 0
        assert math.isfinite(r["peak_share"]) and math.isfinite(r["step_mib"])
    assert "model.vision.stem=patch" in result["overrides"]["albef"]
