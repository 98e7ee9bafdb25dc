"""Loading: recipe YAML files, dotted ``key=value`` overrides, and configs saved with a run.

OmegaConf does the merging and the type checks; its errors become one-line :class:`ConfigError`
messages that name the key and the valid choices, so the CLI never shows a traceback for a user's typo.
Each objective's ``params`` mapping is merged over that objective's parameter dataclass
(:func:`~maskvlp.config.objective_params.objective_params`) once the recipe is merged.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maskvlp.config.checks import validate
from maskvlp.config.errors import ConfigError, friendly
from maskvlp.config.objective_params import OBJECTIVE_PARAMS, objective_params
from maskvlp.config.schema import RunConfig, model_size


def recipe_names() -> list[str]:
    folder = resources.files("maskvlp") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _recipe_text(recipe: str, folder: Path | None = None) -> tuple[str, Path | None]:
    """A recipe's YAML text and the folder its own ``base`` path is read from: a built-in name, or a .yaml
    path (relative to ``folder``, the folder of the recipe file naming it as its base)."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml"):
        if folder is not None and not path.is_absolute():
            path = folder / path
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path.read_text(), path.parent
    names = recipe_names()
    if recipe not in names:
        raise ConfigError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(names)} (or a path to a .yaml file)")
    return (resources.files("maskvlp") / "recipes" / f"{recipe}.yaml").read_text(), None


def _merge_mappings(base: dict, child: dict) -> dict:
    """``child`` over ``base``, recursively for nested mappings (a child's list or scalar replaces the base's)."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _inherit_objectives(recipe: str, base: list[dict], child: list[dict]) -> list[dict]:
    """The base's objectives with the child's entries applied by name: an entry naming a base objective
    changes only the fields it gives (``params`` merged key by key), ``remove: true`` drops it, and an
    objective the base lacks is appended. Order: the base's, then the new ones."""
    merged = [dict(o) for o in base]
    names = [o["name"] for o in merged]
    for entry in child:
        entry = dict(entry)
        name = entry["name"]
        remove = entry.pop("remove", False)
        if name not in names:
            if remove:
                raise ConfigError(f"recipe {recipe}: objectives entry {name!r} has remove: true, but its base has no "
                                  f"such objective; the base has: {', '.join(names) or 'none'}")
            merged.append(entry)
            names.append(name)
            continue
        index = names.index(name)
        if remove:
            del merged[index], names[index]
        else:
            merged[index] = _merge_mappings(merged[index], entry)
    return merged


def resolved_recipe(recipe: str, _chain: tuple[str, ...] = (), _folder: Path | None = None) -> dict:
    """A recipe's YAML mapping with its ``base`` chain applied: sections merge key by key over the base's,
    objectives by name (:func:`_inherit_objectives`). A masked recipe can so say only what it adds to albef."""
    import yaml

    text, folder = _recipe_text(recipe, _folder)
    try:
        recipe_yaml = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {recipe} is not valid YAML: {err}") from None
    _check_recipe_shape(recipe, recipe_yaml)
    base_name = recipe_yaml.pop("base", None)
    if base_name is None:
        removed = [o["name"] for o in recipe_yaml.get("objectives", []) if "remove" in o]
        if removed:
            raise ConfigError(f"recipe {recipe}: objectives {', '.join(removed)} say remove, but the recipe names "
                              "no base to remove them from (add e.g. base: albef)")
        return recipe_yaml
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"recipe {recipe}: 'base' must name one recipe (e.g. base: albef), got {base_name!r}")
    chain = (*_chain, recipe)
    if base_name in chain:
        raise ConfigError(f"recipe {recipe}: base chain loops: {' -> '.join((*chain, base_name))}")
    base = resolved_recipe(base_name, chain, folder)
    merged = _merge_mappings({k: v for k, v in base.items() if k != "objectives"},
                             {k: v for k, v in recipe_yaml.items() if k != "objectives"})
    merged["objectives"] = _inherit_objectives(recipe, base.get("objectives", []), recipe_yaml.get("objectives", []))
    return merged


def recipe_base(recipe: str) -> str | None:
    """The base a recipe names (``base: albef``), or None."""
    import yaml

    try:
        recipe_yaml = yaml.safe_load(_recipe_text(recipe)[0]) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {recipe} is not valid YAML: {err}") from None
    return recipe_yaml.get("base") if isinstance(recipe_yaml, dict) else None


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


def _typed_params(cfg: RunConfig) -> None:
    """Each objective's ``params`` mapping merged over its parameter dataclass (an unknown objective is left
    for :func:`~maskvlp.config.checks.validate` to name)."""
    for obj in cfg.objectives:
        if obj.name in OBJECTIVE_PARAMS:
            obj.params = objective_params(obj.name, obj.params)


SECTIONS = ("model", "data", "train", "eval", "task")  # recipe keys that hold a mapping of settings


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
    recipe_yaml = resolved_recipe(recipe)
    overrides, objective_changes = _split_objective_overrides(overrides or [])
    _apply_objective_overrides(recipe_yaml, objective_changes)
    size = size or recipe_yaml.get("model", {}).get("size", "tiny")
    base = RunConfig(recipe=Path(recipe).stem, output_dir=f"runs/{Path(recipe).stem}-{size}")
    base.model = model_size(size)
    schema = OmegaConf.structured(base)
    recipe_yaml.setdefault("model", {})["size"] = size
    return _merged(schema, lambda: [OmegaConf.create(recipe_yaml),
                                    *([OmegaConf.from_dotlist(_parse_overrides(overrides))] if overrides else [])])


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``key=value`` overrides on an existing config (e.g. a checkpoint's), with the same checks."""
    return _merged(OmegaConf.structured(cfg), lambda: [OmegaConf.from_dotlist(_parse_overrides(list(overrides)))])


def _merged(schema: Any, layers: Callable[[], list[Any]]) -> RunConfig:
    """``layers`` merged over ``schema`` in order, as a typed, checked RunConfig; OmegaConf's errors (raised
    while the layers are built or merged) become one-line ConfigErrors."""
    try:
        cfg: RunConfig = OmegaConf.to_object(OmegaConf.merge(schema, *layers()))  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise friendly(err, schema) from None
    _typed_params(cfg)
    validate(cfg)
    return cfg


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
    """Reload a config saved with a checkpoint (no size/recipe defaults re-applied). Objective parameters
    saved as a partial mapping (runs before the parameter dataclasses) get today's defaults for the rest."""
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(text))
    cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _typed_params(cfg)
    return cfg

