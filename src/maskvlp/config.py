"""Typed configuration: dataclass schemas, YAML recipes and dotted ``key=value`` overrides.

OmegaConf does the merging and the type checks; this module turns its errors into one-line
:class:`ConfigError` messages that name the key and the valid choices, so the CLI never shows a
traceback for a user's typo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A user mistake in a recipe or an override; the message is meant to be shown as is."""


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
@dataclass
class VisionConfig:
    image_size: int = 64
    patch_size: int = 8
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    max_frames: int = 1  # >1 adds a temporal embedding (video); a picture is a one-frame video
    # patch (ViT's linear patch projection) | conv (a small CNN inside each patch) | overlap (Xiao et al.'s
    # strided 3x3 convolutions over the whole image; reads shapes across patch borders, docs/design.md)
    # | efficientnet_lite0 (a hybrid ViT: EfficientNet-Lite0's first stages up to the patch stride, ImageNet
    # weights from an offline package; models/efficientnet.py; the tiny size's stem)
    stem: str = "patch"
    stem_init: str = "pretrained"  # efficientnet_lite0 stem: pretrained (ImageNet, offline) | scratch
    stem_trainable: bool = False  # efficientnet_lite0 stem: False keeps the pretrained convolutions frozen


STEMS = ("patch", "conv", "overlap", "efficientnet_lite0")
STEM_INITS = ("pretrained", "scratch")
# a token reads its neighbours' pixels: hidden patches are zeroed first
OVERLAPPING_STEMS = ("overlap", "efficientnet_lite0")


@dataclass
class TextConfig:
    init: str = "minilm"  # minilm | scratch | hf  (hf: a BERT checkpoint folder given in `checkpoint`)
    checkpoint: Optional[str] = None  # folder with config.json + model.safetensors / pytorch_model.bin
    vocab_size: int = 30522
    width: int = 384
    depth: int = 4  # unimodal text layers; the next `fusion.depth` BERT layers initialise the fusion
    heads: int = 12
    intermediate: int = 1536
    max_len: int = 40
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    # ITC text embedding: cls (BERT, ALBEF) | mean. all-MiniLM-L6-v2 was trained with mean pooling: its
    # [CLS] state is the same for every sentence (cosine > 0.999) below the last layer, so a 4-layer
    # text tower cut from it gives ITC no signal through [CLS] (measured; docs/baselines.md).
    pool: str = "mean"


@dataclass
class FusionConfig:
    mode: str = "text_to_image"  # text_to_image (ALBEF) | cross (two-way, METER/SCL) | merged (single stream, MLIM)
    depth: int = 2


@dataclass
class ModelConfig:
    size: str = "tiny"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    embed_dim: int = 128  # ITC projection size (ALBEF: 256)
    dropout: float = 0.0
    temperature: float = 0.07  # initial ITC temperature (learnable, clamped to [0.001, 0.5] as in ALBEF)
    momentum: float = 0.995  # EMA teacher momentum
    queue_size: int = 4096  # ITC momentum queue (ALBEF: 65,536)


FUSION_MODES = ("text_to_image", "cross", "merged", "two_stream")
TEXT_INITS = ("minilm", "scratch", "hf")


def model_size(name: str) -> ModelConfig:
    """The registered model sizes; ``base`` is ALBEF's (ViT-B/16 + BERT-base, 6 text + 6 fusion layers)."""
    if name == "tiny":  # CPU: a ViT 192 wide on EfficientNet-Lite0's pretrained stride-8 features + all 6 MiniLM
        # layers (4 text, 2 fusion); ALBEF starts its ViT from DeiT, no ViT weights exist offline (docs/design.md)
        return ModelConfig(size="tiny", vision=VisionConfig(width=192, heads=3, stem="efficientnet_lite0"), momentum=0.95,
                           queue_size=1024)
    if name == "base":
        return ModelConfig(
            size="base",
            vision=VisionConfig(image_size=224, patch_size=16, width=768, depth=12, heads=12),
            text=TextConfig(init="scratch", width=768, depth=6, heads=12, intermediate=3072, max_len=40, pool="cls"),
            fusion=FusionConfig(mode="text_to_image", depth=6),
            embed_dim=256,
            queue_size=65536,
        )
    if name == "small":
        return ModelConfig(
            size="small",
            vision=VisionConfig(image_size=128, patch_size=16, width=384, depth=6, heads=6),
            text=TextConfig(depth=4),
            fusion=FusionConfig(depth=2),
            embed_dim=256,
            queue_size=16384,
        )
    raise ConfigError(f"unknown model size {name!r}; valid sizes: {', '.join(MODEL_SIZES)}")


MODEL_SIZES = ("tiny", "small", "base")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class WorldConfig:
    """The procedural scene world (see maskvlp.data.synthetic)."""

    seed: int = 0
    image_size: int = 64
    train_scenes: int = 20000
    val_scenes: int = 500
    test_scenes: int = 1000
    captions_per_scene: int = 5
    min_objects: int = 1
    max_objects: int = 4
    heldout_pairs: int = 3  # colour-shape combinations never seen in training


BATCHINGS = ("random", "lexical")


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | json
    world: WorldConfig = field(default_factory=WorldConfig)
    train_json: list[str] = field(default_factory=list)  # ALBEF-style [{"image", "caption"}] files
    image_root: str = ""  # prefix for relative image paths in the JSON files
    crop_scale_min: float = 0.5  # RandomResizedCrop lower bound on user data (ALBEF: 0.2)
    hflip: bool = False  # off by default: a flip makes "left of" captions false
    max_bad_fraction: float = 0.05  # stop with a clear message when more samples than this are unreadable
    num_workers: int = 0
    # random (ALBEF, CLIP) | lexical: half of each batch are the lexically nearest captions of other images
    # (TF-IDF, from a random pool of lexical_pool items), so in-batch negatives differ in a few words
    batching: str = "random"
    lexical_pool: int = 1024


DATA_SOURCES = ("synthetic", "json")


# --------------------------------------------------------------------------------------------
# Objectives and recipes
# --------------------------------------------------------------------------------------------
# the objectives a recipe may name; maskvlp.objectives registers one class under each (a test checks
# that the two agree), so the config layer validates names without importing the objectives above it
OBJECTIVE_NAMES = ("itc", "itm", "mamo", "mlim", "mlm", "scl", "semmim", "simla_mim", "simla_psl")


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    # weight 0 (and not computed) before start_step, then rising linearly over ramp_steps steps to `weight`
    # (0, 0 = full weight from the first step). For objectives whose gradient would swamp ITC while
    # encoders trained from nothing are not yet aligned (docs/methods.md, SCL).
    start_step: int = 0
    ramp_steps: int = 0


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch (split across ranks)
    grad_accum: int = 1
    lr: float = 3e-4
    text_lr: float = 1e-4  # for the pretrained text/fusion layers (ALBEF fine-tunes BERT at 1e-4)
    # the unimodal towers' weights that start from nothing (ViT body; the text tower with text.init=scratch);
    # 0 = train.lr. Lets fresh fusion layers and heads learn fast while a tower from scratch stays stable
    tower_lr: float = 0.0
    weight_decay: float = 0.02
    warmup_steps: int = 100
    max_steps: int = 3000
    time_budget: float = 0.0  # seconds of training; > 0 ends training when spent (schedule follows it)
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.0  # max global grad norm; 0 = off (ALBEF does not clip; clipping starved ITC here)
    precision: str = "auto"  # auto | fp32 | bf16
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    log_every: int = 10
    ckpt_every: int = 200  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2
    max_nonfinite: int = 3  # consecutive non-finite losses tolerated (step skipped) before stopping


PRECISIONS = ("auto", "fp32", "bf16")
ITM_SCORES = ("albef", "itm")


@dataclass
class EvalConfig:
    split: str = "test"
    num_images: int = 1000
    itm_k: int = 8  # ITC shortlist re-ranked by ITM (ALBEF: 256 of 5k COCO images; 128 on Flickr)
    # re-rank score: albef = ITM match logit + ITC cosine similarity (ALBEF's and BLIP's Retrieval.py) |
    # itm = log p(match) alone. The binding test always uses log p(match): it asks the matching head.
    itm_score: str = "albef"
    batch_size: int = 128
    test_json: str = ""  # Karpathy-style test file [{"image", "caption": [..]}] for user data
    image_root: str = ""
    compare_random_init: bool = True


@dataclass
class RunConfig:
    recipe: str = "albef"
    output_dir: str = "runs/albef-tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    folder = resources.files("maskvlp") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _recipe_text(recipe: str) -> str:
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file {recipe} does not exist")
        return path.read_text()
    names = recipe_names()
    if recipe not in names:
        raise ConfigError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(names)} (or a path to a .yaml file)")
    return (resources.files("maskvlp") / "recipes" / f"{recipe}.yaml").read_text()


def _friendly(err: OmegaConfBaseException, schema: Any) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0]
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(schema, parent) if parent else schema
        valid = sorted(node.keys()) if OmegaConf.is_dict(node) else []
        hint = f"; valid keys{' under ' + parent if parent else ''}: {', '.join(map(str, valid))}" if valid else ""
        return ConfigError(f"unknown config key {key!r}{hint}")
    if isinstance(err, ValidationError):
        return ConfigError(f"bad value for {key!r}: {msg}")
    return ConfigError(f"config error at {key!r}: {msg}")


def _parse_overrides(overrides: list[str]) -> list[str]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
    return list(overrides)


def _split_objective_overrides(overrides: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Separate ``objectives.<name|index>.<weight|params.key>=value`` (lists do not merge as dotlists)."""
    plain, objective = [], []
    for item in _parse_overrides(overrides):
        key, value = item.split("=", 1)
        if key.startswith("objectives."):
            parts = key.split(".", 2)
            if len(parts) < 3:
                raise ConfigError(f"override {item!r}: use objectives.<name>.weight=... or objectives.<name>.params.<key>=...")
            objective.append((parts[1], parts[2], value))
        else:
            plain.append(item)
    return plain, objective


def _apply_objective_overrides(recipe_yaml: dict, changes: list[tuple[str, str, str]]) -> None:
    import yaml

    objectives = recipe_yaml.get("objectives") or []
    names = [o.get("name") for o in objectives]
    for ref, field_path, value in changes:
        if ref.isdigit() and int(ref) < len(objectives):
            target = objectives[int(ref)]
        elif ref in names:
            target = objectives[names.index(ref)]
        else:
            raise ConfigError(f"objectives.{ref}: the recipe has no such objective; it has: {', '.join(map(str, names))}")
        parsed = yaml.safe_load(value)
        if field_path in ("weight", "start_step", "ramp_steps"):
            target[field_path] = parsed
        elif field_path.startswith("params."):
            target.setdefault("params", {})[field_path[len("params."):]] = parsed
        else:
            raise ConfigError(f"objectives.{ref}.{field_path}: only 'weight', 'start_step', 'ramp_steps' and 'params.<key>' can be set")


SECTIONS = ("model", "data", "train", "eval")  # recipe keys that hold a mapping of settings


def _check_recipe_shape(recipe: str, recipe_yaml: Any) -> None:
    """The recipe's layout, before anything reads it: a mapping whose sections are mappings and whose
    ``objectives`` is a list of mappings with a ``name`` (else a one-line error, not a TypeError later)."""
    if not isinstance(recipe_yaml, dict):
        raise ConfigError(f"recipe {recipe} must be a YAML mapping, got a {type(recipe_yaml).__name__}")
    for key in SECTIONS:
        if key in recipe_yaml and not isinstance(recipe_yaml[key], dict):
            raise ConfigError(f"recipe {recipe}: '{key}' must be a mapping of settings, "
                              f"got a {type(recipe_yaml[key]).__name__}")
    objectives = recipe_yaml.get("objectives", [])
    if not isinstance(objectives, list):
        raise ConfigError(f"recipe {recipe}: 'objectives' must be a list of {{name: ..., weight: ...}} entries, "
                          f"got a {type(objectives).__name__}")
    for i, obj in enumerate(objectives):
        if not isinstance(obj, dict) or "name" not in obj:
            raise ConfigError(f"recipe {recipe}: objectives entry {i} must be a mapping with a 'name', got {obj!r}")
        if "params" in obj and not isinstance(obj["params"], dict):
            raise ConfigError(f"recipe {recipe}: objectives entry {i} ({obj['name']}): 'params' must be a mapping, "
                              f"got a {type(obj['params']).__name__}")


def load_config(recipe: str = "albef", size: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Build the run config: schema defaults < model size < recipe YAML < ``key=value`` overrides."""
    import yaml

    try:
        recipe_yaml = yaml.safe_load(_recipe_text(recipe)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {recipe} is not valid YAML: {err}") from None
    _check_recipe_shape(recipe, recipe_yaml)
    overrides, objective_changes = _split_objective_overrides(overrides or [])
    _apply_objective_overrides(recipe_yaml, objective_changes)
    size = size or recipe_yaml.get("model", {}).get("size", "tiny")
    base = RunConfig(recipe=Path(recipe).stem, output_dir=f"runs/{Path(recipe).stem}-{size}")
    base.model = model_size(size)
    schema = OmegaConf.structured(base)
    try:
        recipe_yaml.setdefault("model", {})["size"] = size
        merged = OmegaConf.merge(schema, OmegaConf.create(recipe_yaml))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(_parse_overrides(overrides)))
        cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise _friendly(err, schema) from None
    validate(cfg)
    return cfg


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"bad value for {key!r}: {value!r}; valid choices: {', '.join(valid)}")


def _at_least(low: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v >= low), f"must be >= {low:g}"


def _above(low: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v > low), f"must be > {low:g}"


def _within(low: float, high: float, low_open: bool = False) -> tuple[Callable[[float], bool], str]:
    if low_open:
        return (lambda v: low < v <= high), f"must be in ({low:g}, {high:g}]"
    return (lambda v: low <= v <= high), f"must be in [{low:g}, {high:g}]"


# Every numeric setting's valid range, checked before any work starts, so a value that would only fail
# later (a division by train.log_every=0 after step 1, a crop of scale 0 at the first batch) is a
# one-line error up front. Keys absent from the table accept any value of their type.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "model.vision.image_size": _at_least(1), "model.vision.patch_size": _at_least(1),
    "model.vision.width": _at_least(1), "model.vision.depth": _at_least(0), "model.vision.heads": _at_least(1),
    "model.vision.mlp_ratio": _above(0), "model.vision.max_frames": _at_least(1),
    "model.text.vocab_size": _at_least(1), "model.text.width": _at_least(1), "model.text.depth": _at_least(0),
    "model.text.heads": _at_least(1), "model.text.intermediate": _at_least(1), "model.text.max_len": _at_least(2),
    "model.fusion.depth": _at_least(0), "model.embed_dim": _at_least(1), "model.dropout": _within(0, 0.99),
    "model.temperature": _within(0, 1, low_open=True), "model.momentum": _within(0, 1),
    "model.queue_size": _at_least(0),
    "data.crop_scale_min": _within(0, 1, low_open=True), "data.max_bad_fraction": _within(0, 1),
    "data.num_workers": _at_least(0), "data.lexical_pool": _at_least(1),
    "data.world.image_size": _at_least(8), "data.world.train_scenes": _at_least(1),
    "data.world.val_scenes": _at_least(0), "data.world.test_scenes": _at_least(1),
    "data.world.captions_per_scene": _at_least(1), "data.world.min_objects": _at_least(1),
    "data.world.heldout_pairs": _at_least(0),
    "train.batch_size": _at_least(1), "train.grad_accum": _at_least(1), "train.lr": _above(0),
    "train.text_lr": _above(0), "train.tower_lr": _at_least(0), "train.weight_decay": _at_least(0),
    "train.warmup_steps": _at_least(0), "train.max_steps": _at_least(1), "train.time_budget": _at_least(0),
    "train.min_lr_ratio": _within(0, 1), "train.grad_clip": _at_least(0), "train.threads": _at_least(0),
    "train.log_every": _at_least(1), "train.ckpt_every": _at_least(1), "train.keep_checkpoints": _at_least(0),
    "train.max_nonfinite": _at_least(0),
    "eval.num_images": _at_least(1), "eval.itm_k": _at_least(1), "eval.batch_size": _at_least(1),
}


def _setting(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_ranges(cfg: RunConfig) -> None:
    for key, (ok, rule) in RANGES.items():
        value = _setting(cfg, key)
        if not ok(value):
            hint = " (0 = train.lr)" if key == "train.tower_lr" else ""
            raise ConfigError(f"bad value for {key!r}: {value}; {rule}{hint}")


def validate(cfg: RunConfig) -> None:
    """Checks OmegaConf cannot express: choices, ranges and cross-field consistency."""
    _choice("model.fusion.mode", cfg.model.fusion.mode, FUSION_MODES)
    _choice("model.text.init", cfg.model.text.init, TEXT_INITS)
    _choice("train.precision", cfg.train.precision, PRECISIONS)
    _choice("model.text.pool", cfg.model.text.pool, ("cls", "mean"))
    _choice("model.vision.stem", cfg.model.vision.stem, STEMS)
    _choice("model.vision.stem_init", cfg.model.vision.stem_init, STEM_INITS)
    if cfg.model.vision.stem == "efficientnet_lite0" and cfg.model.vision.patch_size not in (2, 4, 8, 16, 32):
        raise ConfigError(f"model.vision.stem=efficientnet_lite0 needs model.vision.patch_size 2, 4, 8, 16 or 32, "
                          f"got {cfg.model.vision.patch_size}")
    _choice("data.batching", cfg.data.batching, BATCHINGS)
    _choice("eval.itm_score", cfg.eval.itm_score, ITM_SCORES)
    _choice("data.source", cfg.data.source, DATA_SOURCES)
    if cfg.model.text.init == "hf" and not cfg.model.text.checkpoint:
        raise ConfigError("model.text.init=hf needs model.text.checkpoint=<folder of a HF BERT checkpoint>")
    if cfg.model.vision.image_size % cfg.model.vision.patch_size:
        raise ConfigError("model.vision.image_size must be a multiple of model.vision.patch_size")
    _check_ranges(cfg)
    for section, width, heads in (("vision", cfg.model.vision.width, cfg.model.vision.heads),
                                  ("text", cfg.model.text.width, cfg.model.text.heads)):
        if width % heads:
            raise ConfigError(f"model.{section}.width={width} must be a multiple of model.{section}.heads={heads}")
    if cfg.model.text.max_len > cfg.model.text.max_positions:
        raise ConfigError(f"model.text.max_len={cfg.model.text.max_len} exceeds model.text.max_positions="
                          f"{cfg.model.text.max_positions}")
    if cfg.data.world.max_objects < cfg.data.world.min_objects:
        raise ConfigError(f"data.world.max_objects={cfg.data.world.max_objects} is below data.world.min_objects="
                          f"{cfg.data.world.min_objects}")
    if cfg.data.source == "json" and not cfg.data.train_json:
        raise ConfigError("data.source=json needs data.train_json=[file.json,...]")
    if not cfg.objectives:
        raise ConfigError("the recipe lists no objectives")
    valid = OBJECTIVE_NAMES
    for i, obj in enumerate(cfg.objectives):
        _choice(f"objectives.{i}.name", obj.name, tuple(valid))
        for key in ("start_step", "ramp_steps"):
            if getattr(obj, key) < 0:
                raise ConfigError(f"objectives.{obj.name}.{key} must be >= 0, got {getattr(obj, key)}")


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``key=value`` overrides on an existing config (e.g. a checkpoint's), with the same checks."""
    schema = OmegaConf.structured(cfg)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(_parse_overrides(list(overrides))))
        out: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise _friendly(err, schema) from None
    validate(out)
    return out


def _flatten(tree: dict | list, prefix: str = "") -> dict[str, object]:
    """Dotted keys for every leaf (list items by index: ``objectives.3.weight``)."""
    flat: dict[str, object] = {}
    for key, value in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        if isinstance(value, (dict, list)) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(a: RunConfig, b: RunConfig) -> dict[str, tuple[object, object]]:
    """``{dotted key: (value in a, value in b)}`` for every setting that differs, sorted by key."""
    import yaml

    flat_a = _flatten(yaml.safe_load(to_yaml(a)))
    flat_b = _flatten(yaml.safe_load(to_yaml(b)))
    return {k: (flat_a.get(k), flat_b.get(k)) for k in sorted(flat_a.keys() | flat_b.keys())
            if flat_a.get(k) != flat_b.get(k)}


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(text: str) -> RunConfig:
    """Reload a config saved with a checkpoint (no size/recipe defaults re-applied)."""
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(text))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]

