"""``maskvlp ablate``: recipes x text inits x seeds on the same data and budget, one table and a plot.

Each run lives in its own folder; a run whose evaluation already exists is reused, and a run
interrupted after a checkpoint resumes from it (its elapsed time is in the checkpoint, so the
wall-clock budget stays the same), so an interrupted ablation continues where it stopped. The
table covers every finished run in the output folder made to the same budget, so an ablation can
be run in pieces (one init or seed at a time) into one folder. The world (data) seed stays fixed;
the training seed changes the initialisation and the batch order.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from maskvlp.config import ConfigError, RunConfig, config_differences, from_yaml, load_config
from maskvlp.engine.checkpoint import list_checkpoints
from maskvlp.files import atomic_write_text
from maskvlp.engine.logging import console, read_metrics

HEADLINE = ("img_r1", "txt_r1", "sem_img_r1", "ceiling_img_r1", "binding_colour", "binding_relation",
            "binding_colour_heldout", "binding_relation_heldout", "steps", "s_per_step")
# fine-tuned tasks (``--tasks``): (task, results row suffix, metric, column title)
TASK_COLUMNS = (
    ("vqa", "test", "overall", "VQA acc"), ("vqa", "test", "qtype/colour", "VQA colour"),
    ("vqa", "test", "qtype/relation", "VQA relation"), ("vqa", "heldout", "heldout", "VQA held-out pairs"),
    ("nlvr2", "test", "accuracy", "NLVR2 acc"), ("nlvr2", "heldout", "heldout", "NLVR2 held-out pairs"),
    ("grounding", "fine-tuned · test", "accuracy", "grounding acc"),
    ("grounding", "fine-tuned · heldout", "accuracy", "grounding held-out pairs"),
    ("video_retrieval", "T=4 · test · itc", "img_r1", "video R@1 (ITC, 4 frames)"),
    ("video_retrieval", "T=4 · test · itc", "twins", "motion twins (ITC, 4 frames)"),
)
ABLATION_TASKS = ("vqa", "nlvr2", "grounding", "video_retrieval")


def parse_seeds(text: str) -> list[int]:
    """``"2"`` -> seeds 0 and 1 (a count); ``"0,3"`` -> exactly those seeds (a list)."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ConfigError(f"--seeds {text}: a single number is a count of seeds (2 -> seeds 0,1); "
                                  "for seed 0 alone write --seeds 0, (a list)")
            seeds = list(range(count))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (2 -> seeds 0,1) or a comma list (0,1)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: the list is empty or repeats a seed")
    return seeds


def _steps_trained(run_dir: Path) -> tuple[int, float | None] | None:
    """(last logged step, training seconds per step) of a run, from its metrics.jsonl."""
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        return None
    step, elapsed = int(records[-1]["step"]), records[-1].get("elapsed_s")
    return step, (float(elapsed) / step if elapsed is not None and step > 0 else None)


def check_same_settings(run_dir: Path, cfg: RunConfig, state: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a run folder whose saved config differs from ``cfg``.

    Reusing or continuing a run made with other settings would put two settings in one row, and
    deleting it would lose work, so neither happens. The saved config is read through today's
    schema, so a field added since (absent from it) takes its default, which keeps the old
    behaviour: committed results stay usable unless a recipe now sets that field otherwise.
    ``output_dir`` does not count (where, not what).
    """
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    differ = {k: v for k, v in config_differences(from_yaml(saved_path.read_text()), cfg).items()
              if k != "output_dir" and not k.startswith(ignore)}
    if differ:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(differ.items())[:4])
        raise ConfigError(f"{run_dir} holds {state} run with other settings ({shown}); "
                          "remove that folder or choose another --output-dir")


def resume_point(run_dir: Path, cfg: RunConfig) -> str | None:
    """``"latest"`` when ``run_dir`` holds an unfinished run of ``cfg`` with a checkpoint, else None
    (a run with other settings is refused: :func:`check_same_settings`)."""
    if not list_checkpoints(run_dir):
        return None
    check_same_settings(run_dir, cfg, "an unfinished")
    return "latest"


def finetune_tasks(run_dir: Path, seed: int, tasks: list[str], task_overrides: list[str], show_progress: bool) -> None:
    """Fine-tune each task from the run's last checkpoint into ``run_dir/tasks/<task>`` (the task recipe's
    settings, the run's seed, then ``task_overrides``); a task already evaluated there is reused."""
    from maskvlp.finetuning import finetune_and_evaluate, prepare

    if tasks and from_yaml((run_dir / "config.yaml").read_text()).model.fusion.depth == 0:
        console.print(f"  {run_dir.name}: no fusion encoder, no fused task to fine-tune ({', '.join(tasks)})")
        return
    for task in tasks:
        out = run_dir / "tasks" / task
        cfg = prepare(task, str(run_dir), [f"train.seed={seed}", *task_overrides, f"output_dir={out}"])
        if (out / "eval" / "results.json").is_file():
            # never a fine-tune made with other settings as this one (the answer list is read from the data)
            check_same_settings(out, cfg, "a finished", ignore=("task.answers",))
            continue
        resume = resume_point(out, cfg)
        console.print(f"  {run_dir.name}: fine-tuning {task}" + (" (resuming)" if resume else ""))
        finetune_and_evaluate(cfg, resume=resume, show_progress=show_progress)


def run_ablation(recipes: list[str], inits: list[str], seeds: list[int], budget: float, output_dir: str,
                 overrides: list[str], show_progress: bool = True, steps: int = 0, tasks: list[str] | None = None,
                 task_overrides: list[str] | None = None) -> dict:
    """Train and evaluate every (recipe, init, seed); ``budget`` seconds each, or ``steps`` when budget is 0;
    then fine-tune each of ``tasks`` from every run (:func:`finetune_tasks`)."""
    from maskvlp.pipeline import pretrain_and_evaluate

    tasks = list(tasks or [])
    for task in tasks:
        if task not in ABLATION_TASKS:
            raise ConfigError(f"--tasks {task}: the ablation fine-tunes {', '.join(ABLATION_TASKS)}")

    out = Path(output_dir)
    if steps > 0:
        overrides = [*overrides, f"train.max_steps={steps}"]
    configs = [(r, i, s) for r in recipes for i in inits for s in seeds]
    max_steps: set[int] = set()
    for n, (recipe, init, seed) in enumerate(configs, 1):
        run_dir = out / f"{recipe}-{init}-s{seed}"
        cfg = load_config(recipe, None, [*overrides, f"model.text.init={init}", f"train.seed={seed}",
                                          f"train.time_budget={budget}", f"output_dir={run_dir}",
                                          "eval.compare_random_init=false"])
        max_steps.add(cfg.train.max_steps)
        done = run_dir / "eval" / "results.json"
        if done.is_file():
            check_same_settings(run_dir, cfg, "a finished")
            console.print(f"[{n}/{len(configs)}] {run_dir.name}: reusing finished run")
        else:
            length = f"{budget:.0f} s" if budget > 0 else f"{cfg.train.max_steps} steps"
            resume = resume_point(run_dir, cfg)
            again = " (resuming its latest checkpoint)" if resume else ""
            console.print(f"[{n}/{len(configs)}] {run_dir.name}: training for {length}{again}")
            pretrain_and_evaluate(cfg, resume=resume, show_progress=show_progress)
        finetune_tasks(run_dir, seed, tasks, task_overrides or [], show_progress)
    runs, all_seeds = finished_runs(out, configs, budget, max_steps)
    summary = summarise(runs)
    md = markdown(summary, budget, all_seeds, steps or min(max_steps))
    atomic_write_text(out / "ablation.md", md)
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=1))
    plot(summary, out / "ablation.png")
    print(md, flush=True)  # plain text: markdown must not be re-wrapped to the terminal width
    return summary


def _run_name(name: str) -> tuple[str, str, int] | None:
    """``"albef-scratch-s1"`` -> ("albef", "scratch", 1); None for a folder that is not a run."""
    rest, _, seed = name.rpartition("-s")
    recipe, _, init = rest.rpartition("-")
    return (recipe, init, int(seed)) if recipe and init and seed.isdigit() else None


def _run_results(run_dir: Path) -> dict:
    """A finished run's evaluation rows, each with the steps it trained (read from metrics.jsonl)."""
    results = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    trained = _steps_trained(run_dir)
    if trained is not None:
        for row in results.values():
            row["steps"], row["s_per_step"] = trained
    tasks: dict[str, float] = {}
    for task, suffix, metric, title in TASK_COLUMNS:
        file = run_dir / "tasks" / task / "eval" / "results.json"
        if file.is_file():
            rows = json.loads(file.read_text())["results"]
            value = next((row.get(metric) for name, row in rows.items() if name.endswith(suffix)), None)
            if value is not None:
                tasks[title] = float(value)
    if tasks:
        results["trained · tasks"] = tasks
    return results


# rows of runs nobody requested this time: baselines first, then the methods in the order
RECIPE_ORDER = ("clip", "albef", "mlim", "mamo", "simla", "scl", "semmim", "composite")
INIT_ORDER = ("scratch", "minilm", "hf")


def table_order(found: list[tuple[str, str, int]], requested: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The requested runs in request order, then the folder's other runs by recipe (``RECIPE_ORDER``, then
    by name), text init and seed, so a summary written by a piece run reads like the full one below its rows."""
    def rank(key: tuple[str, str, int]) -> tuple:
        recipe, init, seed = key
        r = RECIPE_ORDER.index(recipe) if recipe in RECIPE_ORDER else len(RECIPE_ORDER)
        i = INIT_ORDER.index(init) if init in INIT_ORDER else len(INIT_ORDER)
        return r, recipe, i, init, seed
    return [k for k in requested if k in found] + sorted((k for k in found if k not in requested), key=rank)


def finished_runs(out: Path, requested: list[tuple[str, str, int]], budget: float,
                  max_steps: set[int]) -> tuple[dict[tuple[str, str], list[dict]], list[int]]:
    """Every finished run in ``out`` trained to this budget: the requested ones first, in order.

    The table covers the whole folder, not just this invocation, so an ablation run in pieces
    (one init or one seed at a time) still ends with one complete table. A finished run trained
    to another budget (seconds, or steps when the budget is 0) is left out and named: its row
    would not compare.
    """
    found: dict[tuple[str, str, int], Path] = {}
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        key = _run_name(run_dir.name)
        if key is None or not (run_dir / "eval" / "results.json").is_file() or not (run_dir / "config.yaml").is_file():
            continue
        saved = from_yaml((run_dir / "config.yaml").read_text()).train
        same = saved.time_budget == budget if budget > 0 else saved.time_budget == 0 and saved.max_steps in max_steps
        if same:
            found[key] = run_dir
        else:
            console.print(f"{run_dir.name}: trained to another budget, left out of the table")
    groups: dict[tuple[str, str], list[int]] = {}
    for recipe, init, seed in table_order(list(found), requested):
        groups.setdefault((recipe, init), []).append(seed)
    runs = {group: [_run_results(found[(*group, seed)]) for seed in sorted(seeds)] for group, seeds in groups.items()}
    return runs, sorted({seed for seeds in groups.values() for seed in seeds})


def _stats(values: list[float]) -> dict:
    """Mean, spread (max - min) and standard error of the mean (sample sd / sqrt(n); 0 for one value)."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values), "se": se, "values": values}


def summarise(runs: dict[tuple[str, str], list[dict]]) -> dict:
    """Per (recipe, init, scoring method or ``tasks``): mean, spread and standard error of each headline
    metric over seeds, and each recipe's step time as a ratio to ``albef``'s with the same text init."""
    summary: dict[str, dict] = {}
    for (recipe, init), per_seed in runs.items():
        methods = sorted({row.split(" · ", 1)[1] for results in per_seed for row in results})
        for method in methods:
            rows = [res[f"trained · {method}"] for res in per_seed if f"trained · {method}" in res]
            entry = {"recipe": recipe, "init": init, "method": method, "seeds": len(rows)}
            keys = [title for *_, title in TASK_COLUMNS] if method == "tasks" else HEADLINE
            for key in keys:
                values = [r[key] for r in rows if r.get(key) is not None]
                if values:
                    entry[key] = _stats(values)
            summary[f"{recipe} / {init} / {method}"] = entry
    for entry in summary.values():
        base = next((e for e in summary.values() if e["recipe"] == "albef" and e["init"] == entry["init"]
                     and "s_per_step" in e), None)
        if base is not None and "s_per_step" in entry:
            entry["step_vs_albef"] = entry["s_per_step"]["mean"] / base["s_per_step"]["mean"]
    return summary


def _cell(entry: dict, key: str) -> str:
    if key not in entry:
        return "-"
    stat = entry[key]
    if key == "steps":
        return f"{stat['mean']:.0f}"
    if key == "s_per_step":
        ratio = entry.get("step_vs_albef")
        return f"{stat['mean']:.2f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")
    return f"{stat['mean']:.1f} ± {stat['se']:.1f}" if entry["seeds"] > 1 else f"{stat['mean']:.1f}"


def markdown(summary: dict, budget: float, seeds: list[int], steps: int = 0) -> str:
    length = f"{budget:.0f} s of training" if budget > 0 else f"{steps} training steps"
    scoring = [e for e in summary.values() if e["method"] != "tasks"]
    columns = [k for k in HEADLINE if any(k in e for e in scoring)]
    lines = [f"Ablation: {length} per run, seeds {', '.join(map(str, seeds))}; mean ± standard error of the mean "
             "over the seeds each row has; s_per_step: training seconds per step (its ratio to albef's).", "",
             "| recipe | text init | scoring | " + " | ".join(columns) + " | seeds |",
             "|" + "---|" * (4 + len(columns))]
    for entry in scoring:
        lines.append(f"| {entry['recipe']} | {entry['init']} | {entry['method']} | "
                     + " | ".join(_cell(entry, k) for k in columns) + f" | {entry['seeds']} |")
    tasks = [e for e in summary.values() if e["method"] == "tasks"]
    if tasks:
        titles = [t for *_, t in TASK_COLUMNS if any(t in e for e in tasks)]
        lines += ["", "Fine-tuned from each run (docs/tasks.md):", "",
                  "| recipe | text init | " + " | ".join(titles) + " | seeds |", "|" + "---|" * (3 + len(titles))]
        for entry in tasks:
            lines.append(f"| {entry['recipe']} | {entry['init']} | " + " | ".join(_cell(entry, t) for t in titles)
                         + f" | {entry['seeds']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Per scoring method, R@1 text->image (top row) and colour binding (bottom row) of every recipe,
    one bar per text init: reading across a row compares
    recipes, within a group compares inits; error bars are standard errors over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in summary.values() if e["method"] != "tasks"]
    recipes = list(dict.fromkeys(e["recipe"] for e in entries))
    inits = list(dict.fromkeys(e["init"] for e in entries))
    methods = list(dict.fromkeys(e["method"] for e in entries))
    by_key = {(e["recipe"], e["init"], e["method"]): e for e in entries}
    ceiling = next((e["ceiling_img_r1"]["mean"] for e in entries if e.get("ceiling_img_r1")), None)  # synthetic world only
    rows = (("img_r1", "R@1 text→image (%)"), ("binding_colour", "colour binding (%)"))
    fig, axes = plt.subplots(2, len(methods), figsize=(max(6.0, 0.55 * len(recipes) * len(methods) + 2), 7),
                             squeeze=False)
    width = 0.8 / len(inits)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, method in enumerate(methods):
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            cells = [[by_key.get((r, i, method), {}).get(key) for r in recipes] for i in inits]
            if not any(c for per_init in cells for c in per_init):
                ax.axis("off")  # e.g. no retrieval by the MLM head
                continue
            for n, (init, per_init) in enumerate(zip(inits, cells)):
                xs = [x + (n - (len(inits) - 1) / 2) * width for x, c in enumerate(per_init) if c]
                ax.bar(xs, [c["mean"] for c in per_init if c], width, yerr=[c["se"] for c in per_init if c],
                       capsize=2, color=colours[n % len(colours)], label=f"text {init}")
            if key == "binding_colour":
                ax.axhline(50.0, color="red", ls=":", lw=1)
                ax.set_ylim(0, 100)
            elif ceiling is not None:
                ax.axhline(ceiling, color="gray", ls="--", lw=1)
                ax.set_ylim(0, ceiling * 1.05)
            else:  # users' data: no ceiling known, R@1 may reach 100
                ax.set_ylim(0, 100)
            ax.set_xticks(range(len(recipes)))
            ax.set_xticklabels(recipes, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{label}, by {method}", fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
    fig.text(0.005, 0.005, "dotted red: chance; dashed gray: the world's R@1 ceiling; error bars: standard error over seeds",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
