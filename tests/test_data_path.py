"""benchmarks/data_path.py end to end at toy sizes: the world written as PNG + ALBEF JSON, read back by the
training loader, the long-caption variant really longer, every figure measured."""
from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_data_path_measures_every_source(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import data_path

    out = data_path.main(["--scenes", "16", "--sizes", "32", "--batch-size", "4", "--batches", "1", "--rounds", "1",
                          "--workers", "0"])
    rows = {r["data"]: r for r in out["rows"]}
    assert list(rows) == ["in-memory world (synthetic)", "JSON + 32 px PNG", "JSON + PNG, captions x2"]
    assert rows["JSON + PNG, captions x2"]["tokens"] > 1.5 * rows["JSON + 32 px PNG"]["tokens"]
    for r in rows.values():
        assert r["load_s"] > 0 and r["step_s_w0"] > 0
    assert out["short_s"] > 0 and out["long_s"] > 0
