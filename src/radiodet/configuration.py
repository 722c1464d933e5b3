"""The workflow configuration: its schema, its defaults and its validation.

``workflow/schemas/config.schema.yaml`` is the one place where a default is
written. Keys whose allowed values are whatever is registered in code (the
survey adapters and catalogue formats of :mod:`radiodet.catalogues`) carry
``x-registry: surveys`` or ``x-registry: formats`` there instead of a
hand-kept ``enum``; :func:`load_schema` fills the enum from the registry, so
the schema and the code cannot drift apart.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path

import yaml

from .errors import ConfigError

__all__ = ["SCHEMA_PATH", "load_schema", "validate_config", "section_defaults", "with_section_defaults"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def _schema_text(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _registry_choices(name: str) -> list[str]:
    from .catalogues import registry

    choices = {"surveys": registry.surveys, "formats": registry.formats,
               "reference_formats": lambda: {k: f for k, f in registry.formats().items() if f.reference}}
    if name not in choices:
        raise ConfigError(f"config schema: unknown x-registry {name!r} (known: {', '.join(choices)})")
    return sorted(choices[name]())


def _fill_registries(node):
    if isinstance(node, dict):
        if "x-registry" in node:
            node["enum"] = _registry_choices(node["x-registry"])
        for value in node.values():
            _fill_registries(value)
    elif isinstance(node, list):
        for value in node:
            _fill_registries(value)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema with the registry-backed enums filled in (a fresh copy)."""
    schema = copy.deepcopy(_schema_text(Path(path).resolve()))
    _fill_registries(schema)
    return schema


def _validator_setting_defaults(schema: dict):
    """A Draft 2020-12 validator that also writes each ``default`` it passes.

    The recipe of the jsonschema FAQ, as Snakemake's ``validate`` does: a
    default is set where its object is present, so the defaults of an
    optional section apply only when the config has that section.
    """
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, property_schema in properties.items():
                if isinstance(property_schema, dict) and "default" in property_schema:
                    instance.setdefault(name, copy.deepcopy(property_schema["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Fill ``config``'s defaults in place and check it; raise :class:`ConfigError`.

    The error names the offending key as a dotted path (``catalogue.format``)
    and what was wrong with it.
    """
    from jsonschema import ValidationError

    try:
        _validator_setting_defaults(load_schema(schema_path)).validate(config)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"config key {where}: {exc.message}") from None
    return config


def _section(keys: tuple[str, ...], schema_path: str | Path = SCHEMA_PATH) -> dict:
    node = load_schema(schema_path)
    for key in keys:
        try:
            node = node["properties"][key]
        except KeyError:
            raise ConfigError(f"the config schema has no section {'.'.join(keys)!r}") from None
    return node


def section_defaults(*keys: str, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The schema's defaults of the config section at ``keys`` (e.g. ``"catalogue", "table"``)."""
    return {name: copy.deepcopy(prop["default"]) for name, prop in _section(keys, schema_path)["properties"].items()
            if isinstance(prop, dict) and "default" in prop}


def with_section_defaults(options: Mapping | None, *keys: str) -> dict:
    """``options`` over the schema defaults of section ``keys``, checked against the schema.

    For code that runs a stage outside the workflow with a partial config: an
    unknown key or a wrong value is a :class:`ConfigError` naming the key.
    """
    from jsonschema import ValidationError

    node = _section(keys)
    merged = copy.deepcopy(dict(options or {}))
    try:
        _validator_setting_defaults(node).validate(merged)
    except ValidationError as exc:
        where = ".".join([*keys, *(str(p) for p in exc.absolute_path)])
        raise ConfigError(f"config key {where}: {exc.message}") from None
    return merged
