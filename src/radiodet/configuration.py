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

__all__ = ["SCHEMA_PATH", "load_schema", "validate_config", "section_defaults", "with_section_defaults",
           "schema_config"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


#: libyaml's safe loader where PyYAML has it: the schema is read by every job of the workflow,
#: and the pure-Python loader took 70 ms of each (the same document either way)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _schema_text(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_SAFE_LOADER)


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


def _section(keys: tuple[str, ...], schema_path: str | Path = SCHEMA_PATH, *, registries: bool = True) -> dict:
    # without the registries' enums (their modules import the stages): enough for defaults
    node = load_schema(schema_path) if registries else _schema_text(Path(schema_path).resolve())
    for key in keys:
        try:
            node = node["properties"][key]
        except KeyError:
            raise ConfigError(f"the config schema has no section {'.'.join(keys)!r}") from None
    return node


def section_defaults(*keys: str, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The schema's defaults of the config section at ``keys`` (e.g. ``"catalogue", "table"``)."""
    properties = _section(keys, schema_path, registries=False)["properties"]
    return {name: copy.deepcopy(prop["default"]) for name, prop in properties.items()
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


def _frozen(value):
    """A default safe to share between instances: lists become tuples, recursively."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _is_tuple_annotation(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.startswith(("tuple", "Tuple"))


def schema_config(*keys: str, frozen: bool = True, nested: Mapping[str, type] | None = None,
                  ignore: tuple[str, ...] = (), schema_path: str | Path = SCHEMA_PATH):
    """Class decorator: a stage's config dataclass whose defaults are the schema's.

    It makes the class a dataclass (``frozen`` as given): the fields are
    declared with their types only, and each field named in the schema section at
    ``keys`` takes that section's ``default`` (lists become tuples where the
    field is annotated ``tuple``, else a fresh list per instance). So the
    schema stays the one place where a default is written; a field that is not
    a config key (no schema entry) keeps the default written in the class.

    The class gets a ``from_config(section)`` constructor that builds it from
    a (validated) config section and refuses a key it does not know, naming it
    as a dotted path (``predict.measure.radius``). ``nested`` maps a field to
    the schema-config class of its sub-section; ``ignore`` lists section keys
    that are not the class's business (read by the rule, say);
    ``schema_path`` is for tests.
    """
    import dataclasses

    nested = dict(nested or {})

    def wrap(cls):
        defaults = section_defaults(*keys, schema_path=schema_path)
        annotations = cls.__dict__.get("__annotations__", {})
        for name, annotation in annotations.items():
            if name in cls.__dict__:
                continue
            if name in nested:
                setattr(cls, name, dataclasses.field(default_factory=nested[name]))
            elif name in defaults:
                value = defaults[name]
                if isinstance(value, (list, dict)) and not _is_tuple_annotation(annotation):
                    setattr(cls, name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, value)))
                else:
                    setattr(cls, name, _frozen(value) if isinstance(value, list) else value)
            else:
                raise ConfigError(f"{cls.__name__}.{name}: no default in the config schema section "
                                  f"{'.'.join(keys)!r} and none in the class")
        cls = dataclasses.dataclass(frozen=frozen)(cls)
        where = ".".join(keys)

        def from_config(klass, section: Mapping | None = None):
            options = {k: v for k, v in dict(section or {}).items() if k not in ignore}
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = sorted(set(options) - known)
            if unknown:
                raise ConfigError(f"config key {where}.{unknown[0]}: not a setting of {where} "
                                  f"(unknown: {', '.join(unknown)}; known: {', '.join(sorted(known))})")
            for f in dataclasses.fields(klass):
                if f.name not in options:
                    continue
                if f.name in nested:
                    options[f.name] = nested[f.name].from_config(options[f.name])
                elif isinstance(options[f.name], list) and _is_tuple_annotation(f.type):
                    options[f.name] = _frozen(options[f.name])
            return klass(**options)

        cls.from_config = classmethod(from_config)
        cls.config_section = keys
        return cls

    return wrap
