"""BEiT block-wise patch masking: rectangles of patches, exact count per row."""
from __future__ import annotations

import math
import random

import torch

from maskvlp.masking.counts import mask_counts
from maskvlp.masking.image import ImageMask

BEIT_GRID_PATCHES = 14 * 14  # BEiT's 224 px / 16 px grid, where its block sizes were tuned
BEIT_MIN_BLOCK = 16


def default_min_block(num_patches: int) -> int:
    """Smallest block area: BEiT's 16 patches on 14x14 (about 8% of the image) [code: BEiT],
    scaled with the grid area for smaller grids and capped at 16 for larger ones (SIMLA keeps 16
    on 16x16 [code: SIMLA]) [ours]; e.g. 5 on 8x8, 3 on 5x7."""
    return max(1, min(BEIT_MIN_BLOCK, round(BEIT_MIN_BLOCK * num_patches / BEIT_GRID_PATCHES)))


def _place_block(grid: list[list[bool]], rng: random.Random, cap: int, min_block: int,
                 log_aspect: tuple[float, float], attempts: int) -> int:
    """One BEiT block: a rectangle of random area and aspect that adds 1..cap new patches."""
    gh, gw = len(grid), len(grid[0])
    for _ in range(attempts):
        area = rng.uniform(min_block, cap)  # as BEiT: the range reverses when cap < min_block
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if not (1 <= h <= gh and 1 <= w <= gw) or h * w < min(min_block, cap):
            continue
        top, left = rng.randint(0, gh - h), rng.randint(0, gw - w)
        new = sum(not grid[i][j] for i in range(top, top + h) for j in range(left, left + w))
        if 0 < new <= cap:
            for i in range(top, top + h):
                for j in range(left, left + w):
                    grid[i][j] = True
            return new
    return 0


def _grow(grid: list[list[bool]], rng: random.Random, missing: int) -> None:
    """Top up ``missing`` patches, taken at random from the border of the masked region (so the
    blocks stay blocks), or one random seed patch when nothing is masked yet."""
    gh, gw = len(grid), len(grid[0])
    while missing > 0:
        border = [
            (i, j) for i in range(gh) for j in range(gw) if not grid[i][j] and any(
                0 <= a < gh and 0 <= b < gw and grid[a][b] for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
            )
        ]
        if border:
            picks = rng.sample(border, min(missing, len(border)))
        else:
            picks = [rng.choice([(i, j) for i in range(gh) for j in range(gw) if not grid[i][j]])]
        for i, j in picks:
            grid[i][j] = True
        missing -= len(picks)


def _block_row(rng: random.Random, grid_h: int, grid_w: int, target: int, max_block: int, min_block: int,
               log_aspect: tuple[float, float], attempts: int) -> list[bool]:
    """One row's mask in raster order: blocks until ``target`` patches are masked (or no block fits),
    then topped up at the border to exactly ``target``."""
    grid = [[False] * grid_w for _ in range(grid_h)]
    count = 0
    while count < target:
        delta = _place_block(grid, rng, min(target - count, max_block), min_block, log_aspect, attempts)
        if delta == 0:
            break
        count += delta
    _grow(grid, rng, target - count)
    return [cell for line in grid for cell in line]


def _block_shape_limits(grid_h: int, grid_w: int, min_aspect: float, max_aspect: float | None,
                        min_block: int | None) -> tuple[float, int]:
    """Checked ``(max_aspect, min_block)`` with their defaults filled in."""
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"the grid must be at least 1x1, got {grid_h}x{grid_w}")
    if not 0 < min_aspect <= 1:
        raise ValueError(f"min_aspect must lie in (0, 1], got {min_aspect}")
    max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
    if max_aspect < min_aspect:
        raise ValueError(f"max_aspect ({max_aspect}) must be >= min_aspect ({min_aspect})")
    min_block = default_min_block(grid_h * grid_w) if min_block is None else min_block
    if min_block < 1:
        raise ValueError(f"min_block must be >= 1, got {min_block}")
    return max_aspect, min_block


def block_patch_mask(
    grid_h: int,
    grid_w: int,
    ratio: float = 0.4,
    *,
    generator: torch.Generator,
    batch: int,
    min_block: int | None = None,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    attempts: int = 10,
    device: torch.device | str | None = None,
) -> ImageMask:
    """BEiT block-wise masking on a ``grid_h`` x ``grid_w`` patch grid (raster order), exact count.

    Why: masking random single patches lets the model interpolate from neighbours; rectangles of
    patches make it reason about whole regions [paper: BEiT]. Per row, BEiT's loop places
    rectangles of area ~ U(min_block, remaining) and log-uniform aspect h/w in
    [min_aspect, max_aspect] until ``mask_counts(N, ratio)`` patches are masked, each block adding
    at most the remaining count (capped by ``max_block``, default the whole target).

    Defaults: ratio 0.4 [paper: BEiT, "about 40%", 75 of 196 in its code; BEiT v2 uses 118/196,
    SIMLA 75/256]; aspect 0.3 .. 1/0.3 and 10 attempts per block [code: BEiT]; ``min_block`` from
    :func:`default_min_block`. Differences from BEiT [ours]: a block may span the full grid
    dimension (BEiT requires h < grid_h, w < grid_w, which forbids blocks on 1-row grids); a
    rectangle whose rounded area falls below ``min(min_block, remaining)`` is redrawn, so every
    placed block has at least ``min_block`` patches while that many remain; when all attempts
    fail, the count is topped up from the masked region's border (BEiT v2 tops up uniformly at
    random), so the result is always exact.

    Randomness: one seed per row is drawn from ``generator`` (a (batch,) ``randint``) and drives
    that row's Python RNG; draw the global batch and take this rank's rows with
    :meth:`ImageMask.rows`.
    """
    n = grid_h * grid_w
    max_aspect, min_block = _block_shape_limits(grid_h, grid_w, min_aspect, max_aspect, min_block)
    target = int(mask_counts(torch.tensor([n]), ratio)[0])
    max_block = target if max_block is None else max_block
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device).tolist()
    rows = [_block_row(random.Random(seed), grid_h, grid_w, target, max_block, min_block, log_aspect, attempts)
            for seed in seeds]
    masked = torch.tensor(rows, dtype=torch.bool, device=device).reshape(batch, n)
    return ImageMask.from_bool(masked)
