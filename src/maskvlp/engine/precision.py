"""``precision=auto|fp32|bf16``: bf16 autocast only where the hardware makes it fast.

Measured on these machines: on an AVX2-only CPU a bf16 matmul is several times *slower* than fp32;
on a CPU with AMX (``amx_bf16`` in /proc/cpuinfo) it is about 4x faster; every recent GPU has fast
bf16. So ``auto`` detects rather than assumes.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to what is fast on ``device``; pass explicit choices through."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_amx_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
