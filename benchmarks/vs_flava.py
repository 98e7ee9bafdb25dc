"""Training-step throughput of HF transformers' FLAVA against maskvlp's recipes at matched sizes, in one run.

    .venv/bin/python benchmarks/vs_flava.py --rounds 5

Sizes: both libraries are built at the same sizes (flags, defaults given): one width for the image, text
and multimodal encoders (--width 256, --heads 4, --mlp 0 = 4 x width), --image-layers 4, --text-layers 4,
--fusion-layers 2 (FLAVA's multimodal encoder, maskvlp's fusion), images of --image-size 64 px cut into
plain --patch 8 px patches (maskvlp's ``stem=patch``: the tiny size's EfficientNet stem is overridden),
contrastive projections of --embed-dim 128 and BERT's --vocab 30522; maskvlp's text tower starts from
scratch. ``clip`` has no fusion, and its recipe's 6 text layers are overridden to --text-layers so its text
tower matches the others. The exact overrides are ``maskvlp_overrides`` below (printed with the run).
Both libraries train on one fixed batch of maskvlp's synthetic world: the same images and the same captions,
tokenised by maskvlp's tokenizer and padded to --text-len 32 tokens (--text-pad longest: to the batch's
longest caption). maskvlp's text blocks skip the padding in their position-wise layers and attend with
F.scaled_dot_product_attention; FLAVA computes every position and attends eagerly (matmul, softmax,
matmul), so part of any gap is implementation (the table's title gives the captions' mean length).

FLAVA is ``transformers.FlavaForPreTraining`` from a ``FlavaConfig``, random weights, nothing downloaded.
On image-text pairs HF's FLAVA computes four losses, all weighted 1: global contrastive (on the clean pass),
image-text matching, masked multimodal modeling of text (MMM-text) and of image patches (MMM-image), the
last three on the masked pass. Its unimodal MIM and MLM are computed only when no multimodal output exists
(FLAVA trains them on image-only and text-only batches), so they are not part of this step and their heads
get no gradient. A step runs the image and text encoders twice (clean and masked) and the multimodal
encoder once. Its inputs are made as FLAVA's pre-training data pipeline makes them (torchmultimodal's
VLDataModule): a tenth of the captions exchanged for another row's as ITM negatives (itm_labels 0; the
contrastive and MMM losses skip those rows), then 15% of the caption tokens set to [MASK] (mlm_labels
there), and a BEiT block mask over 75/196 of the patches (FLAVA's share at 224 px, here of the --patch grid;
bool_masked_pos). MMM-image predicts the codes of FLAVA's image codebook, a separate frozen dVAE: it is not
built (``init_codebook=False``) and ``mim_labels`` are fixed random codes of its 8,192-entry vocabulary, so
the codebook's own forward pass is not timed and FLAVA's real step costs that much more than here.

A step, for every model: forward, backward and a fused AdamW step, plus maskvlp's EMA teacher update
(``after_step``); maskvlp's steps are numbered from 1000, so every objective is active.
Time: for each precision in --precisions (auto: bf16 on a CPU with AMX, fp32 elsewhere; one that resolves
to a precision already measured is measured once), every model is built once in this process; after
--warmup 2 steps each, rounds step every model in turn, then time a square matmul, so a slow moment of a
shared machine hits all alike; the median over --rounds is reported.
FLOPs: one more step per model under torch.utils.flop_counter (forward and backward: matmuls, convolutions,
attention, the CPU attention kernel included: ``flop_counter``). GFLOP/s is that over the median step
(optimizer and EMA included), and its share of peak is against the rate of a square matmul (--peak-size
2048) in the precision the model runs in (fp32, or bf16 under bf16 autocast), best of 3 in each round,
median over rounds.
Memory: as in recipe_cost.py, each model runs a few steps in a fresh subprocess, and the peak resident
memory (VmHWM, reset after the first step) above the resident memory before the timed steps is reported.
Name the CPU with every figure and run nothing else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# this folder is on sys.path when the script runs (tests put it there)
from flops import flop_counter, matmul_gflops
from recipe_cost import SIZE_OVERRIDES, _peak_rss_mib, _rss_mib, build

if TYPE_CHECKING:
    from transformers import FlavaConfig

    from maskvlp.data.batch import Batch, TextSpecials

CPU = torch.device("cpu")
MODELS = "flava,albef,clip,mlim,mamo,simla,scl,semmim,composite"
FIRST_STEP = 1000  # maskvlp's step index: past every objective's start_step and ramp
FLAVA_ITM_NEGATIVES = 0.1  # captions exchanged for ITM negatives (torchmultimodal's itm_probability)
FLAVA_TEXT_MASK = 0.15  # caption tokens masked for MMM-text (torchmultimodal's mlm_probability)
FLAVA_PATCH_MASK = 75 / 196  # BEiT block masking as FLAVA's processor does it: 75 of 196 patches ...
FLAVA_MASK_GROUP = 16 / 196  # ... in blocks of at least 16 patches
FLAVA_IMAGE_VOCAB = 8192  # FLAVA's image codebook size (FlavaImageConfig.vocab_size)


@dataclass(frozen=True)
class Dims:
    """The sizes both libraries are built at; each field is the command-line flag of the same name."""

    width: int
    heads: int
    mlp: int
    image_layers: int
    text_layers: int
    fusion_layers: int
    image_size: int
    patch: int
    batch_size: int
    text_len: int
    text_pad: str
    vocab: int
    embed_dim: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def argv(self) -> list[str]:
        """The flags that rebuild these dims (for the memory child)."""
        return [x for f in dataclasses.fields(self)
                for x in (f"--{f.name.replace('_', '-')}", str(getattr(self, f.name)))]


@dataclass
class Trainee:
    """What a timed step needs, whichever library the model comes from."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[int], torch.Tensor]  # the loss of step i (maskvlp's masks and schedules depend on i)
    after_step: Callable[[], None]


def maskvlp_overrides(recipe: str, d: Dims) -> list[str]:
    """Config overrides that size a maskvlp recipe like the FLAVA it is compared with."""
    out = [
        "model.vision.stem=patch", f"model.vision.image_size={d.image_size}", f"model.vision.patch_size={d.patch}",
        f"model.vision.width={d.width}", f"model.vision.heads={d.heads}", f"model.vision.depth={d.image_layers}",
        f"model.vision.mlp_ratio={d.mlp / d.width}", "model.text.init=scratch", f"model.text.vocab_size={d.vocab}",
        f"model.text.width={d.width}", f"model.text.heads={d.heads}", f"model.text.intermediate={d.mlp}",
        f"model.text.depth={d.text_layers}", f"model.text.max_len={d.text_len}", f"model.embed_dim={d.embed_dim}",
    ]  # the world renders at model.vision.image_size (build_pretrain_dataset): no data.world override needed
    if recipe != "clip":  # clip builds no fusion (its recipe sets depth 0)
        out.append(f"model.fusion.depth={d.fusion_layers}")
    return out


def shared_batch(d: Dims) -> tuple[Batch, TextSpecials]:
    """The one batch every model trains on, and the tokenizer's special ids (FLAVA's masking needs them)."""
    from maskvlp.config import load_config
    from maskvlp.data.batch import Batch
    from maskvlp.data.datasets import collate_pretrain
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.trainer import _to_batch, build_pretrain_dataset, text_specials

    cfg = load_config("albef", "tiny", [*SIZE_OVERRIDES, f"train.batch_size={d.batch_size}",
                                        *maskvlp_overrides("albef", d)])
    tokenizer = load_tokenizer()
    specials = text_specials(tokenizer)
    dataset = build_pretrain_dataset(cfg)
    raw = collate_pretrain([dataset[i] for i in range(d.batch_size)], tokenizer, d.text_len)
    batch = _to_batch(raw, CPU, d.batch_size, specials.pad_id)
    pad = d.text_len - batch.input_ids.shape[1] if d.text_pad == "max" else 0
    if pad > 0:  # collate pads to the longest caption; FLAVA's pipeline pads to a fixed length
        ids = torch.nn.functional.pad(batch.input_ids, (0, pad), value=specials.pad_id)
        mask = torch.nn.functional.pad(batch.attention_mask, (0, pad), value=0)
        batch = Batch(batch.images, ids, mask, batch.image_keys, batch.global_size)
    return batch, specials


def build_maskvlp(recipe: str, d: Dims, batch: Batch) -> Trainee:
    """A maskvlp recipe at ``d``, trained on ``batch`` (recipe_cost.build's own batch is set aside)."""
    module, optimizer, _ = build(recipe, "tiny", d.batch_size, maskvlp_overrides(recipe, d))
    return Trainee(module, optimizer, lambda i: module(batch, FIRST_STEP + i)[0], module.after_step)


def flava_config(d: Dims) -> FlavaConfig:
    """FLAVA at ``d``: one width everywhere, no image codebook (its labels are given; module docstring)."""
    from transformers import FlavaConfig

    encoder = {"hidden_size": d.width, "num_attention_heads": d.heads, "intermediate_size": d.mlp}
    return FlavaConfig(
        image_config={**encoder, "num_hidden_layers": d.image_layers, "image_size": d.image_size,
                      "patch_size": d.patch, "vocab_size": FLAVA_IMAGE_VOCAB},
        text_config={**encoder, "num_hidden_layers": d.text_layers, "vocab_size": d.vocab,
                     "max_position_embeddings": max(512, d.text_len)},
        multimodal_config={**encoder, "num_hidden_layers": d.fusion_layers},
        hidden_size=d.width, projection_dim=d.embed_dim, init_codebook=False,
    )


def block_masks(rows: int, grid: int, seed: int) -> torch.Tensor:
    """(rows, grid * grid) BEiT block masks drawn as FLAVA's image processor draws them."""
    from transformers.models.flava.image_processing_pil_flava import FlavaMaskingGenerator  # no torchvision needed

    cells = grid * grid
    generator = FlavaMaskingGenerator(input_size=grid, total_mask_patches=max(1, round(FLAVA_PATCH_MASK * cells)),
                                      mask_group_min_patches=max(1, round(FLAVA_MASK_GROUP * cells)))
    random.seed(seed)  # the generator draws from Python's random module
    return torch.stack([torch.as_tensor(generator()) for _ in range(rows)]).flatten(1).bool()


def flava_inputs(batch: Batch, specials: TextSpecials, d: Dims, seed: int = 0) -> dict[str, torch.Tensor]:
    """FlavaForPreTraining's inputs for maskvlp's batch, made as FLAVA's data pipeline makes them."""
    g = torch.Generator().manual_seed(seed)
    rows = batch.input_ids.shape[0]
    ids, mask = batch.input_ids.clone(), batch.attention_mask.clone()
    negatives = torch.randperm(rows, generator=g)[: round(FLAVA_ITM_NEGATIVES * rows)]
    ids[negatives], mask[negatives] = ids[(negatives + 1) % rows], mask[(negatives + 1) % rows]
    itm_labels = torch.ones(rows, dtype=torch.long)
    itm_labels[negatives] = 0
    maskable = mask.bool() & ~torch.isin(ids, specials.special_ids)
    chosen = maskable & (torch.rand(ids.shape, generator=g) < FLAVA_TEXT_MASK)
    if not chosen.any():  # an empty MMM-text target would make the loss NaN
        chosen.view(-1)[maskable.view(-1).nonzero()[0]] = True
    return {
        "input_ids": ids, "attention_mask": mask, "pixel_values": batch.images, "itm_labels": itm_labels,
        "input_ids_masked": ids.masked_fill(chosen, specials.mask_id), "mlm_labels": ids.masked_fill(~chosen, -100),
        "bool_masked_pos": block_masks(rows, d.grid, seed),
        "mim_labels": torch.randint(FLAVA_IMAGE_VOCAB, (rows, d.grid * d.grid), generator=g),
    }


def build_flava(d: Dims, batch: Batch, specials: TextSpecials) -> Trainee:
    """FlavaForPreTraining at ``d`` with AdamW (fused, as maskvlp's), trained on ``batch``."""
    from transformers import FlavaForPreTraining

    torch.manual_seed(0)
    model = FlavaForPreTraining(flava_config(d)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.02, fused=True)
    inputs = flava_inputs(batch, specials, d)

    def loss(i: int) -> torch.Tensor:
        # FLAVA writes its ignore index into mim_labels in place (at unmasked patches): a fresh copy each step
        return model(**inputs | {"mim_labels": inputs["mim_labels"].clone()}, return_loss=True).loss

    return Trainee(model, optimizer, loss, lambda: None)


def build_trainee(name: str, d: Dims, batch: Batch, specials: TextSpecials) -> Trainee:
    """``flava`` or a maskvlp recipe, ready to step on ``batch``."""
    return build_flava(d, batch, specials) if name == "flava" else build_maskvlp(name, d, batch)


def step(t: Trainee, i: int, precision: str, counter: FlopCounterMode | None = None) -> float:
    """One training step (forward, backward, AdamW, EMA); its wall time. With ``counter``, the forward and
    backward FLOPs go to it (the optimizer's elementwise work is not counted)."""
    from maskvlp.engine.precision import autocast

    t0 = time.perf_counter()
    with counter if counter is not None else contextlib.nullcontext():
        with autocast(precision, CPU):
            loss = t.loss(i)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    t.optimizer.step()
    t.after_step()
    return time.perf_counter() - t0


def peak_dtypes(precision: str) -> list[torch.dtype]:
    """The matmul precisions worth a peak: fp32 always, bf16 where the models run under bf16 autocast."""
    return [torch.float32, torch.bfloat16] if precision == "bf16" else [torch.float32]


def time_models(names: list[str], precision: str, d: Dims, rounds: int, warmup: int, peak_size: int) -> dict[str, Any]:
    """Build every model, count each one's FLOPs, then step them in interleaved rounds with the matmul peak."""
    batch, specials = shared_batch(d)
    trainees = {n: build_trainee(n, d, batch, specials) for n in names}
    for i in range(warmup):
        for n in names:
            step(trainees[n], i, precision)
    flops = {}
    for n in names:
        counter = flop_counter()
        step(trainees[n], warmup, precision, counter)
        flops[n] = float(counter.get_total_flops())
    times: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {str(dt): [] for dt in peak_dtypes(precision)}
    for r in range(rounds):
        for n in names:
            times[n].append(step(trainees[n], warmup + 1 + r, precision))
        for dt in peak_dtypes(precision):
            peaks[str(dt)].append(matmul_gflops(dt, peak_size))
        print(f"{precision} round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
              flush=True)
    del trainees
    gc.collect()
    return {"times": times, "flops": flops, "peaks": {k: statistics.median(v) for k, v in peaks.items()},
            "caption_tokens": float(batch.attention_mask.sum(1).float().mean())}


def memory_child(name: str, precision: str, d: Dims, steps: int) -> None:
    """Print the working memory of a step of ``name`` (run in a fresh process: see the module docstring)."""
    batch, specials = shared_batch(d)
    t = build_trainee(name, d, batch, specials)
    step(t, 0, precision)  # optimizer state exists from here on, as in training
    before = _rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: building the models and world peaks higher
    for i in range(steps):
        step(t, 1 + i, precision)
    print(json.dumps({"step_mib": _peak_rss_mib() - before}))


def step_memory(name: str, precision: str, d: Dims, args: argparse.Namespace) -> float:
    """The working memory of a step of ``name`` in MiB, from a fresh process (``memory_child``)."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", name, "--precisions", precision,
                          "--threads", str(args.threads), "--warmup", str(args.warmup), *d.argv()],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"memory child for {name} ({precision}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["step_mib"]


def cpu_description() -> tuple[str, bool]:
    """The CPU's model name and whether it has AMX bf16 (what precision=auto decides on)."""
    from maskvlp.engine.precision import cpu_has_amx_bf16

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    return name, cpu_has_amx_bf16()


def table_rows(names: list[str], measured: dict[str, Any], memory: dict[str, float], precision: str,
               batch_size: int) -> list[dict[str, Any]]:
    """One row per model: median step, throughput and its ratio to FLAVA's, FLOPs, share of peak, memory."""
    peak_key = str(torch.bfloat16 if precision == "bf16" else torch.float32)
    peak = measured["peaks"][peak_key]
    flava_rate = batch_size / statistics.median(measured["times"]["flava"])
    rows = []
    for n in names:
        t = statistics.median(measured["times"][n])
        gflops = measured["flops"][n] / t / 1e9
        rows.append({"model": n, "step_s": t, "samples_per_s": batch_size / t,
                     "ratio_to_flava": batch_size / t / flava_rate, "gflop_per_step": measured["flops"][n] / 1e9,
                     "gflops": gflops, "peak_dtype": peak_key.removeprefix("torch."), "peak_gflops": peak,
                     "peak_share": gflops / peak, "step_mib": memory[n]})
    return rows


def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    """The table printed for one precision (the JSON has the same rows, unrounded)."""
    dtype = rows[0]["peak_dtype"]
    lines = [title, "", f"| model | step (s) | samples/s | / FLAVA | GFLOP/step | GFLOP/s | share of {dtype} peak "
             "| step memory (MiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | {r['ratio_to_flava']:.2f} | "
              f"{r['gflop_per_step']:.1f} | {r['gflops']:.1f} | {r['peak_share']:.1%} | {r['step_mib']:.0f} |"
              for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=MODELS, help="flava and maskvlp recipes (flava is always measured)")
    ap.add_argument("--precisions", default="fp32,auto", help="fp32 | bf16 | auto (bf16 on a CPU with AMX)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=256, help="image, text and multimodal encoders")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=0, help="MLP hidden size (0: 4 x width)")
    ap.add_argument("--image-layers", type=int, default=4)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--fusion-layers", type=int, default=2, help="FLAVA's multimodal encoder, maskvlp's fusion")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--text-len", type=int, default=32, help="caption tokens, [CLS] and [SEP] included")
    ap.add_argument("--text-pad", choices=("max", "longest"), default="max",
                    help="pad captions to --text-len (FLAVA's pipeline) or to the batch's longest")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--embed-dim", type=int, default=128, help="contrastive projection size")
    ap.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul timed for the peak")
    ap.add_argument("--output", default="runs/bench/vs_flava.json")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print the tables, write the JSON and return what it holds (tests call this)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    d = Dims(args.width, args.heads, args.mlp or 4 * args.width, args.image_layers, args.text_layers,
             args.fusion_layers, args.image_size, args.patch, args.batch_size, args.text_len, args.text_pad,
             args.vocab, args.embed_dim)
    if args.memory_child:
        memory_child(args.memory_child, args.precisions, d, args.warmup + 1)
        return {}

    from maskvlp.engine.precision import resolve_precision

    names = ["flava", *[n for n in args.models.split(",") if n and n != "flava"]]
    asked: dict[str, list[str]] = {}  # resolved precision -> the --precisions entries that resolve to it
    for p in (p for p in args.precisions.split(",") if p):
        asked.setdefault(resolve_precision(p, CPU), []).append(p)
    cpu, amx = cpu_description()
    header = (f"CPU: {cpu} (amx_bf16: {'yes' if amx else 'no'}), {args.threads} threads. Dims: width {d.width}, "
              f"{d.heads} heads, MLP {d.mlp}, layers image {d.image_layers} / text {d.text_layers} / multimodal "
              f"{d.fusion_layers}, image {d.image_size} px, patch {d.patch}, batch {d.batch_size}, text "
              f"{d.text_len} tokens (pad: {d.text_pad}), vocabulary {d.vocab}, projection {d.embed_dim}.")
    print(header, "\nmaskvlp overrides (clip: no model.fusion.depth):", " ".join(maskvlp_overrides("albef", d)),
          flush=True)

    tables = []
    for precision, requested in asked.items():
        measured = time_models(names, precision, d, args.rounds, args.warmup, args.peak_size)
        memory = {n: step_memory(n, precision, d, args) for n in names}
        rows = table_rows(names, measured, memory, precision, d.batch_size)
        peaks = ", ".join(f"{k.removeprefix('torch.')} {v:.1f} GFLOP/s" for k, v in measured["peaks"].items())
        title = (f"\n{precision} (asked as {', '.join(requested)}); median of {args.rounds} interleaved rounds; "
                 f"captions {measured['caption_tokens']:.1f} real tokens on average; matmul peak {peaks}")
        print(markdown(title, rows), flush=True)
        tables.append({"precision": precision, "requested": requested, "peaks_gflops": measured["peaks"],
                       "caption_tokens": measured["caption_tokens"], "rows": rows,
                       "times_s": measured["times"]})
    result = {"header": header, "cpu": cpu, "amx_bf16": amx, "threads": args.threads, "dims": dataclasses.asdict(d),
              "overrides": {n: maskvlp_overrides(n, d) for n in names if n != "flava"}, "rounds": args.rounds,
              "tables": tables}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
