"""The configuration's one error type, and OmegaConf's errors turned into it."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A user mistake in a recipe or an override; the message is meant to be shown as is."""


def friendly(err: OmegaConfBaseException, schema: Any, prefix: str = "") -> ConfigError:
    """One line naming the key (``prefix`` + the key within ``schema``) and, for an unknown key, the valid ones."""
    key = getattr(err, "full_key", None) or ""
    shown = ".".join(part for part in (prefix, key) if part)
    msg = str(err).splitlines()[0]
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(schema, parent) if parent else schema
        valid = sorted(node.keys()) if OmegaConf.is_dict(node) else []
        where = ".".join(part for part in (prefix, parent) if part)
        hint = f"; valid keys{' under ' + where if where else ''}: {', '.join(map(str, valid))}" if valid else ""
        return ConfigError(f"unknown config key {shown!r}{hint}")
    if isinstance(err, ValidationError):
        return ConfigError(f"bad value for {shown!r}: {msg}")
    return ConfigError(f"config error at {shown!r}: {msg}")
