"""The user-data path: how much of a step is reading the data, and how much is caption length.

    .venv/bin/python benchmarks/data_path.py --scenes 512 --sizes 64,256

The embedded world trains from pictures rendered into memory; a user's data comes as image files and
ALBEF JSON (``data.source=json``), often with longer captions. This writes the world's training scenes as
PNG files at each ``--sizes`` (and the same scenes with every caption twice as long: two captions of the
scene joined by "and"), then measures in one run:
  loading  - seconds per batch of the training loader alone (decode, random crop, resize, tokenise,
             collate), for the in-memory world and each JSON variant;
  in step  - seconds per training step *with* loading, the loader feeding the recipe's real step, for
             ``--workers`` DataLoader workers (0 loads in the training process; 1 overlaps loading with
             the step on a second process);
  captions - the recipe's step on a fixed batch of the short and of the long captions (no loading),
             interleaved rounds, median.
Run nothing else on the machine meanwhile, and name the CPU with the figures.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

SIZE_OVERRIDES = ["model.text.init=scratch"]  # cost does not depend on the text init


def write_json_world(scenes: int, size: int, out: Path, long_captions: bool) -> Path:
    """The world's first ``scenes`` training scenes as PNG files + an ALBEF pretrain JSON; returns the JSON."""
    from maskvlp.config import WorldConfig
    from maskvlp.data.synthetic import SyntheticWorld
    from maskvlp.data.synthetic.export import export_albef_json

    world = SyntheticWorld(WorldConfig(image_size=size, train_scenes=scenes))
    pretrain, _ = export_albef_json(world, "train", out, limit=scenes)
    if long_captions:  # each caption followed by another of its scene: about twice the words
        entries = json.loads(pretrain.read_text())
        by_image: dict[str, list[str]] = {}
        for e in entries:
            by_image.setdefault(e["image"], []).append(e["caption"])
        for e in entries:
            others = by_image[e["image"]]
            e["caption"] = f"{e['caption']} and {others[(others.index(e['caption']) + 1) % len(others)]}"
        pretrain = out / "pretrain_long.json"
        pretrain.write_text(json.dumps(entries))
    return pretrain


def config_for(recipe: str, source: Path | None, batch_size: int, workers: int, steps: int, scenes: int):
    from maskvlp.config import load_config

    data = ["data.source=synthetic", f"data.world.train_scenes={scenes}"] if source is None else [
        "data.source=json", f"data.train_json=[{source}]", f"data.image_root={source.parent}"]
    return load_config(recipe, "tiny", [*SIZE_OVERRIDES, *data, f"train.batch_size={batch_size}",
                                        f"data.num_workers={workers}", f"train.max_steps={steps}"])


def loader_for(cfg, dataset, tokenizer):
    from maskvlp.data.datasets import collate_pretrain
    from maskvlp.distributed import DistInfo
    from maskvlp.engine.batches import StepBatches, StepSampler

    collate = functools.partial(collate_pretrain, tokenizer=tokenizer, max_len=cfg.model.text.max_len)
    batches = StepBatches(dataset, cfg.train.batch_size, cfg.train.seed, DistInfo(), collate)
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=StepSampler(0, cfg.train.max_steps),
                                       num_workers=cfg.data.num_workers)


def mean_tokens(loader, batches: int) -> float:
    sizes = [float(raw["attention_mask"].sum(1).float().mean()) for _, raw in zip(range(batches), loader)]
    return statistics.mean(sizes)


def loading_seconds(loader, batches: int) -> float:
    """Seconds per batch of the loader alone, after its first batch (worker start-up, caches)."""
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - t0) / batches


def main(argv: list[str] | None = None) -> dict:
    """Measure and print; returns the rows and the caption-length medians (tests call this)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="albef")
    ap.add_argument("--scenes", type=int, default=512)
    ap.add_argument("--sizes", default="64,256", help="sizes of the PNG files (the model reads 64 x 64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8, help="batches per loading and in-step measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the caption-length steps")
    ap.add_argument("--workers", default="0,1")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.optim import make_optimizer
    from maskvlp.engine.pretrainer import Pretrainer
    from maskvlp.engine.trainer import _to_batch, build_pretrain_dataset, text_specials

    tokenizer = load_tokenizer()
    specials = text_specials(tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix="maskvlp-data-path-"))
    atexit.register(shutil.rmtree, tmp, True)  # the written PNG files go when the process ends
    sources: dict[str, Path | None] = {"in-memory world (synthetic)": None}
    for size in [int(s) for s in args.sizes.split(",") if s]:
        sources[f"JSON + {size} px PNG"] = write_json_world(args.scenes, size, tmp / f"png{size}", False)
    first = [p for p in sources.values() if p is not None][0]
    sources["JSON + PNG, captions x2"] = write_json_world(args.scenes, int(args.sizes.split(",")[0]),
                                                          first.parent, True)

    torch.manual_seed(0)
    base_cfg = config_for(args.recipe, None, args.batch_size, 0, 10_000, args.scenes)
    module = Pretrainer(base_cfg, specials, load_pretrained=False)
    optimizer = make_optimizer(module, module.model, base_cfg.train)

    def train_step(raw: dict, index: int) -> None:
        batch = _to_batch(raw, torch.device("cpu"), raw["input_ids"].shape[0], specials.pad_id)
        loss, _ = module(batch, 1000 + index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.after_step()

    rows = []
    fixed: dict[str, dict] = {}
    for name, source in sources.items():
        cfg = config_for(args.recipe, source, args.batch_size, 0, 10_000, args.scenes)
        dataset = build_pretrain_dataset(cfg)
        loader = loader_for(cfg, dataset, tokenizer)
        row = {"data": name, "tokens": mean_tokens(loader, 4), "load_s": loading_seconds(loader, args.batches)}
        fixed[name] = next(iter(loader))
        for workers in [int(w) for w in args.workers.split(",") if w]:
            cfg_w = config_for(args.recipe, source, args.batch_size, workers, 10_000, args.scenes)
            it = iter(loader_for(cfg_w, build_pretrain_dataset(cfg_w), tokenizer))
            train_step(next(it), 0)  # warm-up (and worker start)
            t0 = time.perf_counter()
            for i in range(args.batches):
                train_step(next(it), 1 + i)
            row[f"step_s_w{workers}"] = (time.perf_counter() - t0) / args.batches
            del it
        rows.append(row)
        print(json.dumps(row), flush=True)

    # caption length alone: the same step on fixed batches of short and of long captions
    short_name, long_name = list(sources)[1], "JSON + PNG, captions x2"
    times: dict[str, list[float]] = {short_name: [], long_name: []}
    for r in range(args.rounds):
        for name in times:
            t0 = time.perf_counter()
            train_step(fixed[name], 100 + r)
            times[name].append(time.perf_counter() - t0)
    workers = [int(w) for w in args.workers.split(",") if w]
    print(f"\n{args.recipe}, tiny, batch {args.batch_size}, {args.threads} threads, {args.scenes} scenes; "
          f"{args.batches} batches per figure\n")
    print("| data | tokens per caption | loading alone (s / batch) | "
          + " | ".join(f"step with loading, {w} workers (s)" for w in workers) + " |")
    print("|---|---:|---:|" + "---:|" * len(workers))
    for row in rows:
        print(f"| {row['data']} | {row['tokens']:.1f} | {row['load_s']:.3f} | "
              + " | ".join(f"{row[f'step_s_w{w}']:.3f}" for w in workers) + " |")
    s, ln = statistics.median(times[short_name]), statistics.median(times[long_name])
    print(f"\nfixed batch, no loading, median of {args.rounds} interleaved rounds: short captions {s:.3f} s, "
          f"captions x2 {ln:.3f} s ({ln / s:.2f}x)")
    return {"rows": rows, "short_s": s, "long_s": ln}


if __name__ == "__main__":
    main()
