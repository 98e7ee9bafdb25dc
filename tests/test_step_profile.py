"""benchmarks/step_profile.py's part clock: a part's time and FLOPs exclude the parts it calls, and the parts
add up to the whole."""
from __future__ import annotations

import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_nested_parts_are_exclusive_and_add_up(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from flops import flop_counter
    from step_profile import PartClock

    clock = PartClock()
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    with flop_counter() as counter:
        a @ b  # the counter's first call pays its set-up
        counter.flop_counts.clear()
        clock.counter = counter
        t0 = time.perf_counter()
        with clock.part("outer", rows=3):
            a @ b  # 2 * 64^3 FLOPs in the outer part itself
            with clock.part("inner", rows=5):
                a @ b
                a @ b
                time.sleep(0.02)
        whole = time.perf_counter() - t0
    assert clock.flops == {"outer": 2 * 64**3, "inner": 4 * 64**3}
    assert clock.rows == {"outer": 3, "inner": 5}
    assert clock.seconds["inner"] >= 0.02
    assert abs(clock.seconds["outer"] + clock.seconds["inner"] - whole) < 0.01


def test_cpu_attention_is_counted(monkeypatch):
    """torch's counter has no CPU attention formula; flops.flop_counter adds it (forward 4 * B*H*L*L*D)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from flops import flop_counter

    q = torch.randn(2, 3, 10, 8)
    with flop_counter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 4 * 2 * 3 * 10 * 10 * 8
