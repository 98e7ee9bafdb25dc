"""Tests for maskvlp.eval: retrieval metrics, batched re-ranking and reports (tiny, CPU only)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from maskvlp.eval.metrics import binding_accuracy, coco_ceiling, recall_at_k, semantic_recall_at_1
from maskvlp.engine.curves import plot_curves  # drawn by the engine after training, not by evaluation
from maskvlp.eval.report import markdown_table, print_table, write_report
from maskvlp.eval.rerank import recall_from_two, rerank_both, rerank_both_cost, rerank_cost, rerank_topk, shortlist

NINF = float("-inf")


# --------------------------------------------------------------------------------------------
# recall_at_k
# --------------------------------------------------------------------------------------------
def test_recall_at_k_hand_built_with_ties_and_neg_inf():
    # 3 images; image 0 owns c0, image 1 owns c1 c2, image 2 owns c3 c4 c5.
    txt2img = torch.tensor([0, 1, 1, 2, 2, 2])
    sim = torch.tensor(
        [
            #  c0   c1   c2    c3    c4    c5
            [0.9, 0.9, 0.1, 0.2, NINF, 0.0],  # img0
            [0.5, 0.3, 0.8, 0.7, 0.6, 0.1],  # img1
            [0.9, 0.8, 0.7, NINF, 0.1, NINF],  # img2
        ]
    )
    # image -> text (rank = wrong captions scoring >= best own caption):
    #   img0: own c0=0.9; c1 ties at 0.9 -> rank 1 (pessimistic)
    #   img1: best own c2=0.8; nothing else >= 0.8 -> rank 0
    #   img2: best own c4=0.1; c0, c1, c2 higher -> rank 3
    #   R@1 = 1/3, R@2 = 2/3, R@3 = 2/3
    # text -> image (column j, rank = other images scoring >= own image):
    #   c0: own img0=0.9, img2 ties 0.9 -> 1     c1: own img1=0.3, img0 0.9, img2 0.8 -> 2
    #   c2: own img1=0.8 -> 0                     c3: own img2=-inf -> never retrieved (miss at any k)
    #   c4: own img2=0.1, img1 0.6 (img0 -inf) -> 1   c5: own img2=-inf -> miss
    #   ranks [1, 2, 0, inf, 1, inf]: R@1 = 1/6, R@2 = 3/6, R@3 = 4/6
    r = recall_at_k(sim, txt2img, ks=(1, 2, 3))
    expect = {
        "txt_r1": 100 / 3, "txt_r2": 200 / 3, "txt_r3": 200 / 3,
        "img_r1": 100 / 6, "img_r2": 50.0, "img_r3": 400 / 6,
    }  # fmt: skip
    for key, v in expect.items():
        assert r[key] == pytest.approx(v), key
    assert r["txt_r_mean"] == pytest.approx((100 / 3 + 400 / 3) / 3)
    assert r["img_r_mean"] == pytest.approx((100 / 6 + 50 + 400 / 6) / 3)
    assert r["r_mean"] == pytest.approx((r["txt_r_mean"] + r["img_r_mean"]) / 2)


def test_recall_at_k_default_keys_and_constant_scores_get_no_credit():
    txt2img = torch.tensor([0, 0, 1, 2, 2])
    r = recall_at_k(torch.zeros(3, 5), txt2img)
    assert set(r) == {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "txt_r_mean", "img_r_mean", "r_mean",
                      "txt_medr", "img_medr"}
    assert r["img_medr"] == 3.0  # every caption tied with (so beaten by) both other images: rank 2, 1-based 3
    assert r["txt_medr"] == 4.0  # images beaten by 3, 4 and 3 foreign captions: median 3, 1-based 4
    assert r["txt_r1"] == 0.0 and r["img_r1"] == 0.0  # every tie goes against the model
    assert r["txt_r5"] == 100.0 and r["img_r5"] == 100.0  # fewer than 5 wrong candidates exist


def _brute_recall(sim: torch.Tensor, txt2img: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    """The documented definition, one query at a time in plain Python."""
    s = sim.tolist()
    n_img, n_txt = len(s), len(s[0])
    txt_ranks, img_ranks = [], []
    for i in range(n_img):
        best = max(s[i][j] for j in range(n_txt) if txt2img[j] == i)
        wrong = [s[i][j] for j in range(n_txt) if txt2img[j] != i]
        txt_ranks.append(math.inf if best == NINF else sum(w >= best for w in wrong))
    for j in range(n_txt):
        best = s[txt2img[j]][j]
        wrong = [s[i][j] for i in range(n_img) if i != txt2img[j]]
        img_ranks.append(math.inf if best == NINF else sum(w >= best for w in wrong))
    out = {"txt_medr": statistics.median(txt_ranks) + 1, "img_medr": statistics.median(img_ranks) + 1}  # MdR, 1-based
    for k in ks:
        out[f"txt_r{k}"] = 100 * sum(r < k for r in txt_ranks) / n_img
        out[f"img_r{k}"] = 100 * sum(r < k for r in img_ranks) / n_txt
    return out


def _albef_recall(sim: torch.Tensor, txt2img: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    """ALBEF's argsort-based evaluation (agrees with ours when there are no ties)."""
    out = {}
    txt_ranks = []
    for i in range(sim.shape[0]):
        inds = torch.argsort(sim[i], descending=True).tolist()
        txt_ranks.append(min(inds.index(j) for j in range(sim.shape[1]) if txt2img[j] == i))
    img_ranks = [torch.argsort(sim[:, j], descending=True).tolist().index(txt2img[j]) for j in range(sim.shape[1])]
    for k in ks:
        out[f"txt_r{k}"] = 100 * sum(r < k for r in txt_ranks) / len(txt_ranks)
        out[f"img_r{k}"] = 100 * sum(r < k for r in img_ranks) / len(img_ranks)
    return out


def _random_retrieval(seed: int) -> tuple[torch.Tensor, list[int]]:
    """7 images owning 1-6 captions each, shuffled."""
    g = torch.Generator().manual_seed(seed)
    counts = [1, 5, 3, 2, 4, 1, 6]
    txt2img = [i for i, c in enumerate(counts) for _ in range(c)]
    txt2img = [txt2img[p] for p in torch.randperm(len(txt2img), generator=g).tolist()]
    return torch.randn(len(counts), len(txt2img), generator=g), txt2img


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_matches_brute_force_with_ties_and_neg_inf(seed):
    sim, txt2img = _random_retrieval(seed)
    sim = (sim * 2).round() / 2  # coarse grid -> many ties
    g = torch.Generator().manual_seed(100 + seed)
    sim[torch.rand(sim.shape, generator=g) < 0.2] = NINF
    ks = (1, 2, 5, 10)
    got = recall_at_k(sim, torch.tensor(txt2img), ks)
    for key, v in _brute_recall(sim, txt2img, ks).items():
        assert got[key] == pytest.approx(v), key


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_at_k_matches_albef_without_ties(seed):
    sim, txt2img = _random_retrieval(seed)
    ks = (1, 3, 5)
    got = recall_at_k(sim, torch.tensor(txt2img), ks)
    for key, v in _albef_recall(sim, txt2img, ks).items():
        assert got[key] == pytest.approx(v), key


def test_recall_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="own no caption"):
        recall_at_k(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(torch.tensor([[float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="txt2img"):
        recall_at_k(torch.zeros(2, 2), torch.tensor([0, 2]))


# --------------------------------------------------------------------------------------------
# semantic recall, oracle ceiling, binding
# --------------------------------------------------------------------------------------------
def _truth_3x6() -> tuple[torch.Tensor, torch.Tensor]:
    """txt2img [0,1,1,2,2,2]; c1 is also true of img2, c3 also of img0."""
    txt2img = torch.tensor([0, 1, 1, 2, 2, 2])
    truth = torch.zeros(6, 3, dtype=torch.bool)
    truth[torch.arange(6), txt2img] = True
    truth[1, 2] = True
    truth[3, 0] = True
    return truth, txt2img


def test_semantic_recall_at_1_hand_built():
    truth, _ = _truth_3x6()
    sim = torch.tensor(
        [
            #  c0   c1   c2   c3   c4   c5
            [0.1, 0.0, 0.0, 0.9, 0.0, 0.0],  # img0: top c3, true of img0 (not its own) -> hit
            [0.0, 0.5, 0.5, 0.0, 0.0, 0.7],  # img1: top c5, false of img1 -> miss
            [0.0, 0.9, 0.0, 0.3, 0.3, 0.9],  # img2: c1 and c5 tie at top, both true -> hit
        ]
    )
    # text -> image, top image per column:
    #   c0 img0 (true) hit | c1 img2 (true, not own) hit | c2 img1 hit | c3 img0 (true) hit
    #   c4 img2 hit | c5 img2=0.9 vs img1=0.7 hit -> 6/6
    # image -> text: hit, miss, hit -> 2/3
    r = semantic_recall_at_1(sim, truth)
    assert r["sem_img_r1"] == pytest.approx(100.0)
    assert r["sem_txt_r1"] == pytest.approx(200 / 3)
    # a false item tied with the best true item wins (pessimistic): c0 column img0 = img1
    sim[1, 0] = 0.1
    assert semantic_recall_at_1(sim, truth)["sem_img_r1"] == pytest.approx(500 / 6)


def test_coco_ceiling_hand_built():
    truth, txt2img = _truth_3x6()
    r = coco_ceiling(truth, txt2img)
    # captions: c1 and c3 fit 2 images -> 1/2 each, the rest 1: (4 + 1/2 + 1/2) / 6 = 5/6
    assert r["ceiling_img_r1"] == pytest.approx(500 / 6)
    # images: img0 true captions {c0, c3}, own {c0} -> 1/2; img1 {c1, c2} own both -> 1;
    #         img2 {c1, c3, c4, c5}, own {c3, c4, c5} -> 3/4; mean = 2.25 / 3 = 0.75
    assert r["ceiling_txt_r1"] == pytest.approx(75.0)
    exact = torch.zeros(6, 3, dtype=torch.bool)
    exact[torch.arange(6), txt2img] = True
    assert coco_ceiling(exact, txt2img) == {"ceiling_img_r1": 100.0, "ceiling_txt_r1": 100.0}
    truth[2, 1] = False  # c2 false of its own image
    with pytest.raises(ValueError, match="own image"):
        coco_ceiling(truth, txt2img)


def test_binding_accuracy_counts_ties_as_half():
    t = torch.tensor([1.0, 0.5, 0.2, NINF, 3.0])
    f = torch.tensor([0.0, 0.5, 0.9, NINF, 2.0])
    # win, tie, loss, tie, win -> (1 + .5 + 0 + .5 + 1) / 5
    assert binding_accuracy(t, f) == pytest.approx(60.0)
    assert binding_accuracy(torch.zeros(4), torch.zeros(4)) == 50.0
    with pytest.raises(ValueError):
        binding_accuracy(torch.zeros(3), torch.zeros(2))


# --------------------------------------------------------------------------------------------
# re-ranking
# --------------------------------------------------------------------------------------------
def _pair_score(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A deterministic 'fusion head' that disagrees with the ITC order."""
    return torch.sin(q.float() * 1.3 + c.float() * 0.7)


class Recorder:
    """score_pairs wrapper that logs every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[int]]] = []

    def __call__(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        assert q.dtype == torch.long and c.dtype == torch.long
        self.calls.append((q.tolist(), c.tolist()))
        return _pair_score(q, c)

    def pairs(self) -> list[tuple[int, int]]:
        return [p for q, c in self.calls for p in zip(q, c)]


def _brute_rerank(sim: torch.Tensor, k: int) -> torch.Tensor:
    """One query and one candidate at a time."""
    out = torch.full(sim.shape, NINF)
    for q in range(sim.shape[0]):
        for c in torch.argsort(sim[q], descending=True)[:k].tolist():
            out[q, c] = _pair_score(torch.tensor([q]), torch.tensor([c]))[0]
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 15, 100])
def test_rerank_topk_matches_brute_force(batch_size):
    sim = torch.randn(5, 9, generator=torch.Generator().manual_seed(0))
    rec, seen = Recorder(), []
    out = rerank_topk(sim, 3, rec, batch_size, progress=seen.append)
    assert torch.equal(out, _brute_rerank(sim, 3))
    assert (out == NINF).sum(dim=1).tolist() == [6] * 5  # all outside the shortlist is -inf
    assert len(rec.pairs()) == rerank_cost(5, 9, 3) == 15
    assert all(len(q) <= batch_size for q, _ in rec.calls)
    assert seen[-1] == 15 and seen == sorted(seen)


def test_shortlist_boundary_ties_keep_lowest_index():
    sim = torch.tensor([[0.5, 1.0, 0.5, 0.5, 0.0], [NINF, NINF, 0.2, NINF, NINF]])
    assert shortlist(sim, 2).tolist() == [[1, 0], [2, 0]]
    assert shortlist(sim, 3).tolist() == [[1, 0, 2], [2, 0, 1]]


def test_rerank_topk_k_larger_than_candidates_and_tiebreak():
    sim = torch.tensor([[0.1, 0.3, 0.2], [0.0, -1.0, 1.0]])
    const = lambda q, c: torch.ones(q.numel())  # noqa: E731
    assert torch.equal(rerank_topk(sim, 10, const, 2), torch.ones(2, 3))
    assert rerank_cost(2, 3, 10) == 6
    # equal ITM scores: with a tie-break the ITC order survives, so recall is not lost to ties
    out = rerank_topk(sim, 2, const, 2, itc_weight=1e-4)
    assert out[0].argmax() == 1 and out[1].argmax() == 2 and out[0, 0] == NINF


def test_rerank_both_scores_each_pair_once_and_matches_two_topk():
    sim = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    rec, seen = Recorder(), []
    i2t, t2i = rerank_both(sim, 3, rec, batch_size=5, progress=seen.append)
    pairs = rec.pairs()
    assert len(pairs) == len(set(pairs)) == rerank_both_cost(sim, 3) == seen[-1]
    assert len(pairs) < 4 * 3 + 7 * 3  # overlap between the directions was deduplicated
    assert set(pairs) == {(i, t) for i in range(4) for t in range(7) if i2t[i, t] > NINF or t2i[i, t] > NINF}
    assert torch.equal(i2t, rerank_topk(sim, 3, _pair_score, 5))
    assert torch.equal(t2i, rerank_topk(sim.t(), 3, lambda t, i: _pair_score(i, t), 5).t())
    txt2img = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    merged = recall_from_two(i2t, t2i, txt2img)
    assert merged["txt_r1"] == recall_at_k(i2t, txt2img)["txt_r1"]
    assert merged["img_r5"] == recall_at_k(t2i, txt2img)["img_r5"]
    assert merged["r_mean"] == pytest.approx((merged["txt_r_mean"] + merged["img_r_mean"]) / 2)


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def test_write_report_json_and_markdown(tmp_path: Path):
    results = {
        "trained (itc)": {"img_r1": 51.234, "txt_r1": 60.0, "r_mean": 55.6, "binding_colour": 88.25},
        "random init (itc)": {"img_r1": 0.2, "txt_r1": 0.1, "sem_img_r1": float("nan")},
    }
    json_path, md_path = write_report(results, tmp_path / "eval", "Synthetic test", notes=["k=16"])
    data = json.loads(json_path.read_text())
    assert data["title"] == "Synthetic test" and data["notes"] == ["k=16"]
    assert data["results"]["trained (itc)"]["img_r1"] == 51.234
    assert data["results"]["random init (itc)"]["sem_img_r1"] is None  # NaN is not valid JSON
    md = md_path.read_text()
    assert "| model | img_r1 | txt_r1 | sem_img_r1 | binding_colour |" in md
    assert "| trained (itc) | 51.2 | 60.0 | - | 88.2 |" in md
    assert "| random init (itc) | 0.2 | 0.1 | nan | - |" in md
    assert md.startswith("# Synthetic test") and "- k=16" in md
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["results.json", "results.md"]
    assert markdown_table(results) in md


def test_print_table_renders(tmp_path: Path):
    from rich.console import Console

    console = Console(record=True, width=120)
    print_table({"a": {"img_r1": 12.34}}, "title", console=console)
    text = console.export_text()
    assert "img_r1" in text and "12.3" in text


def test_plot_curves_small_and_empty(tmp_path: Path):
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 5 - s * 0.1, "loss_itc": 2 - s * 0.05, "lr": 1e-4 * s}) for s in range(20)]
    lines.append(json.dumps({"step": 20, "samples_per_s": 100.0}))
    log.write_text("\n".join(lines) + '\n{"step": 21, "lo')  # torn last line
    png = plot_curves(log, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for out in (plot_curves(empty, tmp_path / "empty.png"), plot_curves(log, tmp_path / "none.png", keys=["loss_mlm"])):
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "empty.jsonl", "empty.png", "metrics.jsonl", "none.png"]
