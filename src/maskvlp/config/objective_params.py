"""Each objective's parameters: one dataclass per objective, with its defaults and its valid values.

A recipe lists only the parameters that differ from these defaults (``objectives: [{name, params: {...}}]``);
:func:`objective_params` merges them over the dataclass with OmegaConf, as the rest of the config is merged.
A field's valid values are declared next to it (``param(..., rule=...)`` or ``choices=``), checks that
involve several fields in the class's ``CROSS``; :func:`maskvlp.config.checks.check_objective_params` checks
both, so a bad parameter is the same one-line error as any other setting. Checks that involve the model
config (a fusion mode that returns no image states) stay with the objective.

Provenance tags in the comments are those of docs/methods.md, "Sources".
"""
from __future__ import annotations

import typing
from dataclasses import MISSING as NO_DEFAULT, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maskvlp.config.errors import ConfigError, friendly
from maskvlp.config.rules import Rule, above, at_least, within

# an objective's ``text_negatives``: none, or a perturbation of maskvlp.negatives (swap: two attribute words
# of one kind exchanged, or a spatial word reversed)
TEXT_NEGATIVES = ("none", "swap")
IMAGE_MASKING = ("drop", "replace")  # mamo
REGRESSIONS = ("mse", "smooth_l1")  # mamo
RECON_REGIONS = ("masked", "all")  # mlim
RECON_TARGETS = ("pixels", "stem")  # mlim: the image [paper], or the frozen stem's patch features [ours]
RECON_REDUCTIONS = ("mean", "sum")  # mlim
MIM_TARGETS = ("codes", "features")  # simla_mim
# where an image-side masked objective's targets come from: the EMA teacher's ViT patch states (the papers'
# momentum targets) | the frozen pretrained stem's patch features (issue "targets with semantics": a few hundred
# steps leave the teacher's ViT near empty, while the stem is trained on ImageNet) [ours]
TARGET_SOURCES = ("teacher", "stem")
SIMLA_MASK_RATIO = 75 / 256  # 75 of the 16 x 16 patches [code: SIMLA configs/Pretrain.yaml]


def param(default: Any = NO_DEFAULT, *, rule: Rule | None = None, choices: tuple[str, ...] | None = None,
          factory: Callable[[], Any] | None = None) -> Any:
    """A parameter field: its default and, when restricted, its valid values (checked by
    :func:`~maskvlp.config.checks.check_objective_params`; ``None`` passes a rule)."""
    metadata = {k: v for k, v in (("rule", rule), ("choices", choices)) if v is not None}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# (fields, is valid given their values in that order, what valid values are)
CrossRule = tuple[tuple[str, ...], Callable[..., bool], str]


@dataclass
class ObjectiveParams:
    """Base of the objectives' parameter dataclasses."""

    CROSS: ClassVar[tuple[CrossRule, ...]] = ()  # checks that involve several fields

    def __getitem__(self, key: str) -> Any:
        """``params["alpha"]``: read like the mapping a recipe gives."""
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


# ------------------------------------------------------------------------------------------------- ITC
@dataclass
class ITCParams(ObjectiveParams):
    momentum_features: bool = True  # False: in-batch InfoNCE, CLIP's loss (no teacher, no queue, no distillation)
    queue: bool = True  # a queue of past teacher features (ALBEF); only with momentum_features
    alpha: float = 0.4  # momentum distillation [ALBEF]; 0 with momentum_features false
    alpha_ramp_steps: int = 200  # alpha ramps in from 0 (ALBEF: over the first epoch)
    # in-batch columns: teacher features (ALBEF) | the student's own, gathered with gradient (CLIP-like)
    batch_features: str = param("teacher", choices=("teacher", "student"))
    # swap: caption twins as extra image -> text columns (NegCLIP) [ours; ALBEF and CLIP: none]
    text_negatives: str = param("none", choices=TEXT_NEGATIVES)


# ------------------------------------------------------------------------------------------------- ITM
@dataclass
class ITMParams(ObjectiveParams):
    hard_negatives: bool = True  # negatives from the softmax of ITC similarities [ALBEF]; false = random_mix 1
    # share of negatives drawn uniformly instead [ours; ALBEF: 0]
    random_mix: float = param(0.0, rule=within(0, 1))
    # random_steps / random_ramp_steps [ours]: a curriculum, random negatives first (a matching head leaves its
    # class prior on them after ~200 steps from scratch towers, never within 800 on ITC-hard ones), then the
    # random share falls linearly to random_mix (docs/baselines.md). 0 / 0 = ALBEF's hard negatives throughout.
    random_steps: int = param(0, rule=at_least(0))
    random_ramp_steps: int = param(0, rule=at_least(0))
    # swap: each caption's twin as one more negative pair [ours, after NegCLIP / SVLC; ALBEF: none]
    text_negatives: str = param("none", choices=TEXT_NEGATIVES)
    # balance [ours; ALBEF: false]: positives and negatives each weigh half the loss. Every image brings one
    # positive and two or three negatives, so the head first learns to say "no match" (accuracy on positives
    # 0.00-0.25 over the first 300 albef steps); balanced it answers positives from the start (docs/baselines.md).
    balance: bool = False
    # weight of a ranking term on the match log-odds [ours; ALBEF: 0]
    rank: float = param(0.0, rule=at_least(0))


# ------------------------------------------------------------------------------------------------- MLM
@dataclass
class MLMParams(ObjectiveParams):
    ratio: float = 0.15  # of the real tokens, with BERT's 80/10/10 [ALBEF]
    alpha: float = 0.4  # momentum distillation [ALBEF]; 0 builds no teacher fusion for it
    alpha_ramp_steps: int = 200
    # the share of the batch's captions MLM masks and predicts (the first ceil(share * B) rows) [ours; ALBEF: 1]
    batch_share: float = param(1.0, rule=within(0, 1, low_open=True))


# ------------------------------------------------------------------------------------------------ MAMO
@dataclass
class MAMOParams(ObjectiveParams):
    image_ratio: float = param(0.75, rule=within(0, 1, low_open=True, high_open=True))  # [notes: MAMO, secondary reading]
    text_ratio: float = param(0.25, rule=within(0, 1, low_open=True, high_open=True))  # [notes: MAMO, secondary reading]
    # drop: the ViT encodes only the visible patches, a learned mask embedding fills the masked positions
    # before fusion (MAE style) | replace: the ViT's mask token in place of masked patches (SimMIM) [ours]
    image_masking: str = param("drop", choices=IMAGE_MASKING)
    mlm_weight: float = param(1.0, rule=at_least(0))  # equal weights [notes: MAMO Eq. 6]
    mim_weight: float = param(1.0, rule=at_least(0))
    mrm_weight: float = param(1.0, rule=at_least(0))
    # regression on layer-normalised targets [ours; the notes leave MSE or smooth-L1 open]
    regression: str = param("mse", choices=REGRESSIONS)
    smooth_l1_beta: float = 1.0  # only for regression=smooth_l1 [ours]
    # 0 = an MLP predictor [notes: Table 10, depth barely matters]
    mim_decoder_blocks: int = param(0, rule=at_least(0))
    mim_source: str = param("teacher", choices=TARGET_SOURCES)  # MIM's targets [paper: momentum features]

    CROSS = ((("mlm_weight", "mim_weight", "mrm_weight"), lambda *w: any(x > 0 for x in w), "must not all be 0"),)


# ------------------------------------------------------------------------------------------------ MLIM
@dataclass
class MLIMParams(ObjectiveParams):
    heavy_ratio: float = param(0.8, rule=within(0, 1))  # [S]
    light_ratio: float = param(0.15, rule=within(0, 1))  # [I]
    # heavy_image, heavy_text, light; normalised; equal [S]
    mode_weights: list[float] = param(factory=lambda: [1.0, 1.0, 1.0], rule=(
        lambda w: len(w) == 3 and all(x >= 0 for x in w) and sum(w) > 0,
        "must be 3 non-negative numbers (heavy_image, heavy_text, light) with a positive sum"))
    recon_region: str = param("masked", choices=RECON_REGIONS)  # [I], the sources conflict
    recon_reduction: str = param("mean", choices=RECON_REDUCTIONS)  # the paper: per-image SSE (sum) [ours: mean]
    recon_weight: float = 10.0  # ~ 1 / IMAGE_STD^2 for the mean reduction [ours]
    decoder_width: int = param(128, rule=at_least(1))  # [ours]
    # stem: RECON in feature space, a linear head per patch regressing the frozen stem's layer-normalised
    # features (unit variance, so recon_weight ~1 there; 10 is calibrated for pixels) [ours]
    recon_target: str = param("pixels", choices=RECON_TARGETS)


# ------------------------------------------------------------------------------------------------- SCL
@dataclass
class SCLParams(ObjectiveParams):
    # image_ratio 0.8 (mask_ratio), text_ratio 0.4 (mtm_ratio), temperature 0.03 (scl_temp) [code];
    # some patches must stay visible
    image_ratio: float = param(0.8, rule=within(0, 1, high_open=True))
    text_ratio: float = param(0.4, rule=within(0, 1))
    temperature: float = param(0.03, rule=above(0))
    # 1 / 0: every chosen token becomes [MASK], as the code [code]; composite sets MLM's 0.15 / 0.8 / 0.1 so
    # SCL's pass B *is* MLM's pass [ours]
    text_mask_fraction: float = param(1.0, rule=at_least(0))
    text_random_fraction: float = param(0.0, rule=at_least(0))

    CROSS = ((("text_mask_fraction", "text_random_fraction"), lambda m, r: m + r <= 1, "must sum to <= 1"),)


# ---------------------------------------------------------------------------------------------- SemMIM
@dataclass
class SemMIMParams(ObjectiveParams):
    ratio: float = param(0.5, rule=within(0, 1, low_open=True))  # [I] notes: 40-75% is usual for iBOT-style VLP
    guided_fraction: float = param(0.5, rule=within(0, 1))  # [I] notes: 50/50 guided/random mix
    # [ours] random masking ramps to the mix (like ALBEF's 200-step alpha ramp here)
    guided_warmup_steps: int = param(200, rule=at_least(0))
    hidden_dim: int = param(256, rule=at_least(1))  # [ours] tiny; iBOT 2048
    bottleneck_dim: int = param(64, rule=at_least(1))  # [ours] tiny; iBOT 256
    out_dim: int = param(1024, rule=at_least(1))  # K [ours] tiny; iBOT 8192, DINO 65536
    teacher_temp: float = param(0.04, rule=above(0))  # [DINO default]
    student_temp: float = param(0.1, rule=above(0))  # [DINO default]
    center_momentum: float = param(0.9, rule=within(0, 1, high_open=True))  # [DINO default]
    global_weight: float = 1.0  # [I]
    mim_weight: float = 1.0  # [I]


# ---------------------------------------------------------------------------------------------- SIMLA
@dataclass
class SimlaMIMParams(ObjectiveParams):
    ratio: float = param(SIMLA_MASK_RATIO, rule=within(0, 1, low_open=True, high_open=True))
    min_block: Optional[int] = param(None, rule=at_least(1))  # None: maskvlp.masking.default_min_block
    # codes: a frozen random codebook in place of SIMLA's DALL-E codes | features: regression [ours]
    target: str = param("codes", choices=MIM_TARGETS)
    source: str = param("teacher", choices=TARGET_SOURCES)  # the features coded or regressed [ours]
    # what the masked patches read at every fusion layer: the caption's embedding-layer output, the same at
    # every layer [code: SIMLA's image queries attend to BERT's word embeddings] | tower: the text tower's
    # output through the text stream's layer inputs (before 2026-12-07) [ours]
    text_context: str = param("embeddings", choices=("embeddings", "tower"))
    codebook_size: int = param(8192, rule=at_least(2))  # [code: DALL-E's 8192 codes]
    codebook_seed: int = 0
    alpha: float = param(0.4, rule=within(0, 1))  # momentum distillation [paper eq. 7 + code]
    alpha_ramp_steps: int = 200


@dataclass
class SimlaPSLParams(ObjectiveParams):
    k: int = param(5, rule=at_least(1))  # keywords per caption [code]
    per_head: int = param(4, rule=at_least(1))  # votes per attention head, when per-head rows exist [code]
    alpha: float = param(0.4, rule=within(0, 1))  # [paper eq. 8 + code]
    alpha_ramp_steps: int = 200


# the objectives a recipe may name and their parameters; maskvlp.objectives registers one class under each
# name (a test checks that the two agree), so the config layer knows them without importing the objectives
OBJECTIVE_PARAMS: dict[str, type[ObjectiveParams]] = {
    "itc": ITCParams, "itm": ITMParams, "mamo": MAMOParams, "mlim": MLIMParams, "mlm": MLMParams,
    "scl": SCLParams, "semmim": SemMIMParams, "simla_mim": SimlaMIMParams, "simla_psl": SimlaPSLParams,
}
OBJECTIVE_NAMES = tuple(OBJECTIVE_PARAMS)


def params_key(name: str) -> str:
    """The dotted key of an objective's parameters, as errors name them."""
    return f"objectives.{name}.params"


_TYPE_RULES: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "must be true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "must be a number"),
    str: (lambda v: isinstance(v, str), "must be a string"),
    list[float]: (lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v), "must be a list of numbers"),
}


def _check_types(cls: type[ObjectiveParams], given: Mapping[str, Any], where: str) -> None:
    """Each given value of a known field has the field's type. OmegaConf would convert ``"yes"`` or ``1`` to
    true and ``"0.5"`` to 0.5; a recipe's YAML never needs that, and a Python caller's mapping should not."""
    hints = typing.get_type_hints(cls)
    for key, value in given.items():
        hint = hints.get(key)
        if hint is None or key == "CROSS":
            continue  # unknown keys are OmegaConf's to report
        optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
        if optional:
            if value is None:
                continue
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if hint not in _TYPE_RULES:
            continue  # a type without a rule here: OmegaConf's check alone
        ok, rule = _TYPE_RULES[hint]
        if not ok(value):
            raise ConfigError(f"bad value for '{where}.{key}': {value!r}; {rule}{' or null' if optional else ''}")


def objective_params(name: str, given: ObjectiveParams | Mapping[str, Any] | None = None) -> ObjectiveParams:
    """Objective ``name``'s parameters: ``given`` (a recipe's mapping, only what differs) merged over its
    dataclass's defaults by OmegaConf, with one-line errors for an unknown key or a value of the wrong type.
    Ranges are :func:`~maskvlp.config.checks.check_objective_params`'s."""
    if name not in OBJECTIVE_PARAMS:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(sorted(OBJECTIVE_PARAMS))}")
    cls, where = OBJECTIVE_PARAMS[name], params_key(name)
    if isinstance(given, cls):
        return given
    if isinstance(given, ObjectiveParams):
        raise ConfigError(f"{where}: objective {name!r} takes {cls.__name__}, got {type(given).__name__}")
    if OmegaConf.is_config(given):
        given = OmegaConf.to_container(given)  # type: ignore[assignment]
    given = dict(given or {})
    _check_types(cls, given, where)
    schema = OmegaConf.structured(cls)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, given))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise friendly(err, schema, where) from None
