"""The platform's one configuration model.

Every setting is declared once, in a JSON-Schema section file under ``sections/``
(``<section>.yaml``), with its type, its ``default`` and a ``description``. The
effective configuration is, in this order:

1. the defaults read from those schemas,
2. deep-merged with the operator's YAML file (``cscale-hub up --config FILE``,
   or the ``cscale`` value of the Helm chart),
3. validated against the full schema; an invalid value stops start-up with an
   error that names the key and says what is allowed.

Both the local stack and the Helm chart configure every process from this model through
the same entry points (``hub.configure_from_environment``, ``gateway.configure_from_environment``),
which read it with :func:`load_resolved`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SECTIONS_DIR = Path(__file__).parent / "sections"
#: environment variable naming the resolved configuration (JSON or YAML) for hub_config/
CONFIG_ENV = "CSCALE_HUB_CONFIG"
#: environment variable holding the settings YAML itself, where no file can be mounted (the
#: dask-gateway chart's gateway pod gets the ConfigMap cscale-settings this way)
TEXT_ENV = "CSCALE_SETTINGS_YAML"


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


@cache
def schema() -> dict[str, Any]:
    """The full JSON Schema: one property per section file."""
    props = {}
    for path in sorted(SECTIONS_DIR.glob("*.yaml")):
        props[path.stem] = yaml.safe_load(path.read_text())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "C-SCALE Hub configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }


def _defaults(node: Mapping[str, Any]) -> Any:
    if "default" in node:
        return copy.deepcopy(node["default"])
    if node.get("type") == "object" and "properties" in node:
        return {k: _defaults(v) for k, v in node["properties"].items()}
    return None


def defaults() -> dict[str, Any]:
    """Every setting at its default value."""
    return _defaults(schema())


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _explain(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = f"{key}." if key != "(top level)" else ""
        names = ", ".join(f"{where}{e}" for e in extra)
        return f"{names}: unknown setting; allowed here: {', '.join(allowed)}"
    desc = error.schema.get("description", "").strip().splitlines()
    hint = f" ({desc[0]})" if desc else ""
    return f"{key}: {error.message}{hint}"


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError naming every invalid key of ``cfg``."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(
            "invalid configuration:\n" + "\n".join(f"  - {_explain(e)}" for e in errors)
        )


def _parse(text: str, source: str) -> dict[str, Any]:
    """The operator's settings in ``text`` (YAML), a mapping of sections; ``source`` names it."""
    try:
        user = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(user, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return dict(user)


def _resolve(user: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = deep_merge(defaults(), user)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    validate(cfg)
    return cfg


def load(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, merged with the YAML file at ``path`` and ``overrides``, validated."""
    user: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
        user = _parse(text, str(path))
    return _resolve(user, overrides)


def loads(text: str, source: str = "<settings>") -> dict[str, Any]:
    """Defaults, merged with the settings YAML ``text``, validated (``source`` names it in errors)."""
    return _resolve(_parse(text, source), None)


def load_resolved() -> dict[str, Any]:
    """The configuration a running component was handed: the file ``$CSCALE_HUB_CONFIG`` names,
    else the YAML text in ``$CSCALE_SETTINGS_YAML``, else the defaults."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        text = os.environ.get(TEXT_ENV)
        return loads(text, f"${TEXT_ENV}") if text else load(None)
    if path.endswith(".json"):
        cfg = deep_merge(defaults(), json.loads(Path(path).read_text()))
        validate(cfg)
        return cfg
    return load(path)
