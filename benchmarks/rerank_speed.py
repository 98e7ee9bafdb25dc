"""The ITM re-rank of evaluation, with each image projected once per sub-batch against once per pair, in one run.

    .venv/bin/python benchmarks/rerank_speed.py runs/albef-tiny --images 300 --rounds 3

Evaluation re-scores every caption's top-k images and every image's top-k captions with the fusion encoder
(docs/design.md, "Speed of a step": the evaluation). ``itm_scorer`` hands the fusion the sub-batch's distinct
images and an ``image_index``, so an image's keys and values are projected once however many of its pairs the
sub-batch holds; the reference below gives every pair its own copy of the image tokens, as before
2026-12-08. Both score the same pairs (the re-rank of the first ``--images`` test images and their captions)
in alternating rounds; the medians, their ratio and the largest score difference are printed.
Do not run anything else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def per_pair_scorer(model, images, texts, batch_size: int = 128):
    """The reference: pairs sorted by text length, each pair with its own copy of its image's tokens."""
    lengths = texts.mask.sum(1)

    @torch.no_grad()
    def score(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(lengths[text_idx], stable=True)
        out = torch.empty(len(text_idx))
        for start in range(0, len(order), batch_size):
            sel = order[start:start + batch_size]
            t, i = text_idx[sel], image_idx[sel]
            length = int(lengths[t].max())
            logits = model.itm_logits(texts.tokens[t, :length], texts.mask[t, :length], images.tokens[i])
            out[sel] = logits[:, 1].float()
        return out

    return score


def main() -> None:
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.eval.rerank import rerank_both, rerank_both_cost
    from maskvlp.eval.retrieval import RERANK_CHUNK, encode_images, encode_texts, itm_scorer
    from maskvlp.finetuning import load_task_module
    from maskvlp.pipeline import retrieval_set_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a pre-trained run folder or checkpoint with an ITM head")
    ap.add_argument("--images", type=int, default=300, help="test images (with their captions) to re-rank")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    module, cfg = load_task_module(args.run)
    model = module.model.eval()
    cfg.eval.num_images = args.images
    rset = retrieval_set_for(cfg, show_progress=False)
    tokenizer = load_tokenizer()
    with torch.no_grad():
        images = encode_images(model, rset.image_batch, rset.num_images, cfg.eval.batch_size)
        texts = encode_texts(model, tokenizer, rset.texts, cfg.model.text.max_len, cfg.eval.batch_size)
    sim = (images.embed @ texts.embed.T).float()
    pairs = rerank_both_cost(sim, args.k)
    scorers = {"per image": itm_scorer(model, images, texts, cfg.eval.batch_size, "logit"),
               "per pair": per_pair_scorer(model, images, texts, cfg.eval.batch_size)}
    times: dict[str, list[float]] = {name: [] for name in scorers}
    results = {}
    for r in range(args.rounds):
        for name, score in scorers.items():
            t0 = time.perf_counter()
            results[name] = rerank_both(sim, args.k, score, RERANK_CHUNK)
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()), flush=True)
    finite = torch.isfinite(results["per pair"][1])
    diff = (results["per image"][1][finite] - results["per pair"][1][finite]).abs().max().item()
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{rset.num_images} images, {len(rset.texts)} captions, k={args.k}: {pairs:,} pairs, "
          f"{torch.get_num_threads()} threads; largest score difference {diff:.2e}")
    for name, m in med.items():
        print(f"  {name}: {m:.2f} s ({pairs / m:,.0f} pairs/s), x{m / med['per pair']:.2f} of per pair")
    if diff > 1e-3:
        raise SystemExit(f"the two scorers disagree by {diff:.2e}")


if __name__ == "__main__":
    main()
