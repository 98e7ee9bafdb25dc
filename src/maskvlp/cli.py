"""``maskvlp`` command line: pretrain, finetune, evaluate, ablate, data check, recipes.

Settings are ``key=value`` overrides on typed configs (``train.lr=1e-4 model.text.init=scratch``),
not flags. A user mistake (bad recipe, unknown key, wrong type, missing file) prints one line naming
the problem and exits with status 2: no traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from maskvlp.config import ConfigError, load_config, recipe_base, recipe_names, resolved_recipe

if TYPE_CHECKING:
    from maskvlp.data.check import DataCheckReport

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Vision-language pre-training with masked multimodal modeling.")
evaluate_app = typer.Typer(no_args_is_help=True, help="Evaluate a checkpoint.")
app.add_typer(evaluate_app, name="evaluate")
data_app = typer.Typer(no_args_is_help=True, help="Check user data before a run.")
app.add_typer(data_app, name="data")

OVERRIDES = typer.Argument(None, help="config overrides key=value, e.g. train.time_budget=120 model.text.init=scratch")


def _user_errors() -> tuple[type[BaseException], ...]:
    from maskvlp.data.datasets import DataFormatError
    from maskvlp.data.tokenizer import TokenizerNotFound
    from maskvlp.engine.batches import DataError
    from maskvlp.engine.checkpoint import CheckpointError
    from maskvlp.engine.trainer import TrainingDiverged
    from maskvlp.models.pretrained import CheckpointMismatch, PretrainedNotFound

    return (ConfigError, DataFormatError, TokenizerNotFound, DataError, CheckpointError, TrainingDiverged,
            CheckpointMismatch, PretrainedNotFound, FileNotFoundError)


def _run(fn, *args, **kwargs):
    """Call ``fn``; turn a user mistake into one line on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: the last complete checkpoint is kept (resume with --resume latest)", err=True)
        raise typer.Exit(130) from None


@app.command()
def pretrain(
    recipe: str = typer.Option("albef", help=f"recipe name ({', '.join(recipe_names())}) or a .yaml path"),
    size: Optional[str] = typer.Option(None, help="model size: tiny | small | base"),
    resume: Optional[str] = typer.Option(None, help="'latest' or a checkpoint folder"),
    overwrite: bool = typer.Option(False, help="start over in an output_dir that holds an earlier run (deletes its "
                                               "checkpoints, metrics and results); without it such a folder is refused"),
    evaluate: bool = typer.Option(True, help="evaluate (and compare with a random init) after training"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Pre-train a recipe, then evaluate retrieval and binding on the test set."""
    from maskvlp.pipeline import pretrain_and_evaluate

    cfg = _run(load_config, recipe, size, overrides or [])
    if resume and overwrite:
        _run(_refuse, "--resume continues a run and --overwrite deletes it: give one of them")
    _run(pretrain_and_evaluate, cfg, resume=resume, evaluate=evaluate, overwrite=overwrite)


def _refuse(message: str) -> None:
    raise ConfigError(message)


@app.command()
def finetune(
    task: str = typer.Argument(..., help="retrieval | vqa | nlvr2 | grounding | video_retrieval"),
    from_: str = typer.Option(..., "--from", help="the pre-trained run or checkpoint folder to start from, or 'none' "
                                                   "(no vision-language pre-training: the floor every table needs)"),
    size: Optional[str] = typer.Option(None, help="model size with --from none (tiny | small | base); a pre-trained "
                                                  "run brings its own"),
    resume: Optional[str] = typer.Option(None, help="'latest' or a checkpoint folder of this fine-tuning run"),
    overwrite: bool = typer.Option(False, help="start over in an output_dir that holds an earlier run"),
    evaluate: bool = typer.Option(True, help="evaluate on the task's test splits after training"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Fine-tune on a downstream task (the engine of pre-training: budgets, resume, DDP, metrics), then evaluate."""
    from maskvlp.finetuning import finetune_and_evaluate, prepare

    cfg = _run(prepare, task, from_, overrides or [], size)
    if resume and overwrite:
        _run(_refuse, "--resume continues a run and --overwrite deletes it: give one of them")
    _run(finetune_and_evaluate, cfg, resume=resume, evaluate=evaluate, overwrite=overwrite)


def _evaluate_task(task: str, checkpoint: str, output: Optional[str], overrides: Optional[list[str]]) -> None:
    from maskvlp.finetuning import evaluate_task_checkpoint

    _run(evaluate_task_checkpoint, checkpoint, overrides or [], output, task=task)


@evaluate_app.command("vqa")
def evaluate_vqa_cmd(
    checkpoint: str = typer.Option(..., help="a fine-tuned VQA checkpoint folder or run folder"),
    output: Optional[str] = typer.Option(None, help="folder for results.json / results.md"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """VQA accuracy (official metric) overall, per answer type and question type, on the task's test splits."""
    _evaluate_task("vqa", checkpoint, output, overrides)


@evaluate_app.command("nlvr2")
def evaluate_nlvr2_cmd(
    checkpoint: str = typer.Option(..., help="a fine-tuned NLVR2 checkpoint folder or run folder"),
    output: Optional[str] = typer.Option(None, help="folder for results.json / results.md"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """NLVR2 accuracy and consistency on the task's test splits."""
    _evaluate_task("nlvr2", checkpoint, output, overrides)


@evaluate_app.command("grounding")
def evaluate_grounding_cmd(
    checkpoint: str = typer.Option(..., help="a fine-tuned grounding checkpoint, or a pre-trained one (its own "
                                             "ITM maps, no fine-tuning)"),
    output: Optional[str] = typer.Option(None, help="folder for results.json / results.md"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Weakly-supervised grounding: the candidate box where the ITM Grad-CAM map is densest, correct at
    IoU >= 0.5 (ALBEF's RefCOCO+ protocol), beside the random, largest and centre-most box floors."""
    _evaluate_task("grounding", checkpoint, output, overrides)


@evaluate_app.command("video_retrieval")
def evaluate_video_retrieval_cmd(
    checkpoint: str = typer.Option(..., help="a fine-tuned video retrieval checkpoint, or a pre-trained one "
                                             "(zero-shot: its image encoder reads the frames)"),
    output: Optional[str] = typer.Option(None, help="folder for results.json / results.md"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Video-text retrieval (MSR-VTT protocol: R@1/5/10, median rank; ITC and ITM re-rank) at task.frames frames
    and on the first frame alone, with motion-twin accuracy where the test set has twins."""
    _evaluate_task("video_retrieval", checkpoint, output, overrides)


@evaluate_app.command("retrieval")
def evaluate_retrieval_cmd(
    checkpoint: str = typer.Option(..., help="checkpoint folder or run folder (its newest checkpoint)"),
    output: Optional[str] = typer.Option(None, help="folder for results.json / results.md"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Retrieval (ITC and ITC+ITM re-rank) and, on the synthetic world, semantic R@1 and binding; a fine-tuned
    retrieval checkpoint is shown beside the zero-shot figure of the checkpoint it started from."""
    from maskvlp.finetuning import evaluate_task_checkpoint
    from maskvlp.pipeline import evaluate_checkpoint

    def go() -> None:
        from maskvlp.config import from_yaml
        from maskvlp.engine.checkpoint import read_config_yaml, resolve_checkpoint

        if from_yaml(read_config_yaml(resolve_checkpoint(checkpoint))).task.name == "retrieval":
            evaluate_task_checkpoint(checkpoint, overrides or [], output, task="retrieval")
        else:
            evaluate_checkpoint(checkpoint, overrides or [], output)

    _run(go)


@app.command()
def explain(
    checkpoint: str = typer.Option(..., help="a run or checkpoint folder with a fusion encoder"),
    image: str = typer.Option(..., help="the picture"),
    text: str = typer.Option(..., help="the text to look for in it"),
    word: Optional[str] = typer.Option(None, help="map one word of the text instead of the whole text"),
    layer: Optional[int] = typer.Option(None, help="fusion layer whose cross-attention is read (default: ALBEF's "
                                                   "choice scaled to the depth)"),
    out: str = typer.Option("explain.png", help="the PNG to write"),
) -> None:
    """Where the model finds the text in the image: Grad-CAM of the ITM score (ALBEF's) as a PNG."""

    def go() -> None:
        import numpy as np
        from PIL import Image

        import maskvlp
        from maskvlp.data.transforms import resize_square
        from maskvlp.eval.heatmap import save_explanation

        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image} does not exist")
        model = maskvlp.load(checkpoint)
        try:
            maps, match = model.explain([image], [text], word=word, layer=layer)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        with Image.open(image) as f:
            picture = np.asarray(resize_square(f.convert("RGB"), 256))  # the square view the model sees, larger
        title = f"{text!r}" + (f", word {word!r}" if word else "") + f": p(match) {float(match[0]):.2f}"
        path = save_explanation(picture, maps[0], title, out)
        typer.echo(f"{path}  p(match) {float(match[0]):.3f}")

    _run(go)


@app.command()
def ablate(
    recipes: str = typer.Option("clip,albef", help="comma-separated recipe names"),
    inits: str = typer.Option("minilm,scratch", help="comma-separated text.init values"),
    seeds: str = typer.Option("3", help="a count (3 -> seeds 0,1,2) or a comma list of training seeds (0,3)"),
    budget: float = typer.Option(300.0, help="training wall-clock seconds per run (0: use --steps)"),
    steps: int = typer.Option(0, help="training steps per run instead of a wall-clock budget (with --budget 0)"),
    tasks: str = typer.Option("", help="fine-tune these tasks from every run too (vqa,nlvr2,grounding,video_retrieval), into <run>/tasks/"),
    task_override: Optional[list[str]] = typer.Option(
        None, help="key=value for every task fine-tune (repeatable), e.g. train.time_budget=0 train.max_steps=400"),
    output_dir: str = typer.Option("runs/ablate", help="where runs, the table and the plot go"),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Train every recipe x text init x seed on the same data and budget; one table (mean ± standard error,
    step time against albef's), the fine-tuned tasks' table with --tasks, and a plot."""
    from maskvlp.ablate import parse_seeds, run_ablation

    def go() -> None:
        if steps > 0 and budget > 0:
            raise ConfigError("give either --budget (seconds) or --steps with --budget 0, not both")
        run_ablation([r for r in recipes.split(",") if r], [i for i in inits.split(",") if i], parse_seeds(seeds),
                     budget, output_dir, overrides or [], steps=steps, tasks=[t for t in tasks.split(",") if t],
                     task_overrides=task_override or [])

    _run(go)


def _check_data(recipe: str, overrides: list[str]) -> DataCheckReport:
    """The data check of the JSON files the config names, with a progress bar on stderr."""
    from rich.progress import Progress

    from maskvlp.data.check import check_data
    from maskvlp.engine.logging import console

    cfg = load_config(recipe, None, overrides)
    if not cfg.data.train_json and not cfg.eval.test_json:
        raise ConfigError("nothing to check: give data.train_json=[file.json,...] data.image_root=... "
                          "and/or eval.test_json=file.json eval.image_root=... (synthetic data needs no check)")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("decoding images", total=None)
        return check_data(cfg.data.train_json, cfg.data.image_root, cfg.eval.test_json or None, cfg.eval.image_root,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))


@data_app.command("check")
def data_check(
    recipe: str = typer.Option("albef", help="recipe name or .yaml path (only its data and eval settings matter)"),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="data.train_json=\\[a.json,b.json] data.image_root=DIR eval.test_json=FILE eval.image_root=DIR"),
) -> None:
    """Decode every image of data.train_json and eval.test_json; count empty, repaired and bad entries.

    Exit status: 0 every image reads; 1 some are missing or unreadable (listed); 2 a user error.
    """
    from maskvlp.data.check import format_report

    report = _run(_check_data, recipe, overrides or [])
    typer.echo(format_report(report))
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("make-world")
def data_make_world(
    out_dir: str = typer.Argument(..., help="folder for images/, train.json, test.json, heldout.json, probes, "
                                            "world.json"),
    seed: int = typer.Option(0, help="world seed: the same seed and sizes give byte-identical files"),
    image_size: int = typer.Option(64, help="picture side in pixels (at least 16)"),
    train_scenes: int = typer.Option(20000, help="train scenes (5 captions each)"),
    test_scenes: int = typer.Option(1000, help="test scenes; the heldout split gets as many"),
    heldout_pairs: int = typer.Option(3, help="colour-shape pairs kept out of train and test"),
) -> None:
    """Write the tabletop world, the second scene world, made independently of the embedded one."""
    from maskvlp.data.tabletop import write_world

    def progress(split: str, done: int, total: int) -> None:
        typer.echo(f"{split}: {done}/{total} scenes", err=True)

    try:
        files = write_world(out_dir, seed=seed, image_size=image_size, train_scenes=train_scenes,
                            test_scenes=test_scenes, heldout_pairs=heldout_pairs, progress=progress)
    except ValueError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    for name, path in files.items():
        typer.echo(f"{name:15s} {path}")


@app.command("recipes")
def list_recipes(
    show: Optional[str] = typer.Option(None, "--show", help="print this recipe (a name or a .yaml path) with its "
                                       "base applied: the settings a run of it starts from"),
) -> None:
    """List the built-in recipes and their objectives, or print one resolved (``--show NAME``)."""
    import yaml

    if show is not None:
        resolved = _run(resolved_recipe, show)
        base = _run(recipe_base, show)
        if base:
            typer.echo(f"# {show}: {base} with {show}'s additions and changes applied")
        typer.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())
        return
    for name in recipe_names():
        cfg = load_config(name)
        objectives = " + ".join(f"{o.name}×{o.weight:g}" for o in cfg.objectives)
        base = recipe_base(name)
        typer.echo(f"{name:10s} {objectives}" + (f"  (base: {base})" if base else ""))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="maskvlp")


if __name__ == "__main__":
    sys.exit(main())
