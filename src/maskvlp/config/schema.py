"""The run's settings as dataclasses: model (and its sizes), data, objectives, training, evaluation.

OmegaConf builds and type-checks these from the recipe YAML (:mod:`maskvlp.config.load`); the valid
ranges and choices are in :mod:`maskvlp.config.checks`, each objective's parameters in
:mod:`maskvlp.config.objective_params`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from maskvlp.config.errors import ConfigError


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
    pos_init_std: float = 0.02  # the position embedding's init (ViT: 0.02)
    temporal_init_std: float = 0.02  # the temporal embedding's init
    # learned (ViT: trained from a small random init) | sincos (fixed 2D sine-cosine positions and 1D frame
    # positions at the tokens' scale, as MAE / MoCo v3; docs/design.md, "Where a token sits")
    pos_embed: str = "learned"
    # clips: a patch also attends to the patches at its position in the other frames (TimeSformer's time
    # attention; SCL's encoder lets a patch see its own frame only; docs/tasks.md, "Video")
    patch_time_attention: bool = False
    # patch (ViT's linear patch projection) | conv (a small CNN inside each patch) | overlap (Xiao et al.'s
    # strided 3x3 convolutions over the whole image; reads shapes across patch borders, docs/design.md)
    # | efficientnet_lite0 (a hybrid ViT: EfficientNet-Lite0's first stages up to the patch stride, ImageNet
    # weights from an offline package; models/efficientnet.py; the tiny size's stem)
    stem: str = "patch"
    stem_init: str = "pretrained"  # efficientnet_lite0 stem: pretrained (ImageNet, offline) | scratch
    stem_trainable: bool = False  # efficientnet_lite0 stem: False keeps the pretrained convolutions frozen


STEMS = ("patch", "conv", "overlap", "efficientnet_lite0")
POS_EMBEDS = ("learned", "sincos")
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
    clip_frames: int = 8  # frames of a synthetic video clip (moving objects)


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
@dataclass
class ObjectiveConfig:
    name: str = MISSING
    weight: float = 1.0
    # the objective's parameters: a mapping in a recipe (only what differs from the defaults); load_config and
    # from_yaml turn it into the objective's parameter dataclass (maskvlp.config.objective_params), its defaults
    # filled in and its values checked
    params: Any = field(default_factory=dict)
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
    # binding probes for user data: [{"image", "true", "false", "kind", "heldout"?}], images under image_root
    probes_json: str = ""
    compare_random_init: bool = True


# --------------------------------------------------------------------------------------------
# Downstream tasks
# --------------------------------------------------------------------------------------------
TASKS = ("retrieval", "vqa", "nlvr2", "grounding", "video_retrieval")
FRAME_SAMPLINGS = ("random", "uniform")
TASK_SOURCES = ("synthetic", "files")


@dataclass
class TaskConfig:
    """A downstream task (``maskvlp finetune TASK``); ``name`` is empty for pre-training.

    What a fine-tuned checkpoint needs to be used alone is kept here, so its ``config.yaml`` carries it:
    the answer vocabulary and the pre-trained checkpoint it started from (``init_*``).
    """

    name: str = ""  # "" (pre-training) | retrieval | vqa | nlvr2 | grounding | video_retrieval
    init_from: str = ""  # the pre-trained checkpoint folder it started from; "none": no vision-language pre-training
    init_recipe: str = ""  # recorded at the start: the pre-trained run's recipe and step
    init_step: int = -1
    source: str = "synthetic"  # synthetic (the world's task data) | files (the datasets' own files)
    train_files: list[str] = field(default_factory=list)  # VQA v2 questions + annotations, ALBEF json, NLVR2 jsonl
    train_image_root: str = ""
    test_files: list[str] = field(default_factory=list)
    test_image_root: str = ""
    num_answers: int = 3129  # VQA: the answer vocabulary, the training set's most frequent answers (ViLT, METER)
    answers: list[str] = field(default_factory=list)  # VQA: filled from the training set when fine-tuning starts
    blind: bool = False  # VQA floor: the question-only model (every image replaced by a blank one)
    questions_per_scene: int = 6  # synthetic VQA
    train_pairs: int = 20000  # synthetic NLVR2 pairs of train scenes
    test_pairs: int = 1000  # synthetic NLVR2 pairs of test (and of held-out) scenes
    head_hidden: float = 2.0  # answer / pair classifier: hidden width as a multiple of the fused width (ViLT: 2)
    train_scenes: int = 10000  # synthetic grounding: training scenes (every object that can be referred to is a target)
    refer_dir: str = ""  # grounding on files: ALBEF's refcoco_data folder (refcoco+/refs(unc).p, instances.json, dets.json)
    dets_file: str = ""  # grounding: candidate boxes, when not <refer_dir>/refcoco+/dets.json
    box_alpha: float = 0.5  # grounding: a box scores sum(map inside) / area ** alpha (ALBEF's evaluation: 0.5)
    cam_layer: int = -1  # grounding: the fusion layer Grad-CAM reads; -1: ALBEF's (index 2, or the last of a shallower fusion)
    frames: int = 4  # video: frames per clip (SCL: 4); the model's vision.max_frames is raised to it
    frame_sampling: str = "random"  # video training: one random frame per segment (SCL) | uniform (segment middles); tests: uniform
    train_clips: int = 3000  # synthetic video: training clips of moving objects
    train_twins: bool = False  # synthetic video: training clips as motion-twin pairs, each batched beside its twin (tried: no gain, docs/tasks.md)
    twins_file: str = ""  # video on files: [[video_id, twin video_id], ...] pairs scored as motion twins (optional)


@dataclass
class RunConfig:
    recipe: str = "albef"
    output_dir: str = "runs/albef-tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    task: TaskConfig = field(default_factory=TaskConfig)
