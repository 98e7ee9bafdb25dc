"""FLOP counting and the machine's matmul peak, shared by the benchmarks.

torch's FLOP counter has formulas for the GPU attention kernels only; ``flop_counter`` adds the CPU one,
so attention counts on a CPU as it does on a GPU.
"""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def flop_counter() -> FlopCounterMode:
    """A FLOP counter that also counts attention on a CPU. torch's counter has formulas for the GPU attention
    kernels only: maskvlp's F.scaled_dot_product_attention would count nothing on a CPU while FLAVA's eager
    attention counts its matmuls. torch's own SDPA formulas are used (the backward includes the score recompute)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    })


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, tries: int = 3) -> float:
    """The best rate of an n x n matmul in ``dtype``: what dense math attains on this machine right now."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9
