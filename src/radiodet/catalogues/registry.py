"""The survey registry: every catalogue format and survey adapter, found in one place.

Each module of :mod:`radiodet.catalogues` that defines ``FORMATS`` (format
name -> :class:`CatalogueFormat`) and/or ``SURVEYS`` (adapter name ->
:class:`Survey`) is found here by itself. Adding a survey is one new module
in this package (its reader and its defaults) plus its config: the config
schema takes its enums of adapters and formats from here
(:func:`radiodet.configuration.load_schema`), the ingest stage reads with
it, and nothing else changes.

A survey's ``defaults`` fill every config key the config leaves out (the
config always wins) before the config is validated against the schema; the
schema's own defaults fill the rest. Rules and stages never branch on the
survey: they read the catalogue format, class mapping, image plane, noise
source and cutout layout from the merged config.
"""

from __future__ import annotations

import copy
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CatalogueError, ConfigError
from .tables import line_of_row

__all__ = ["CatalogueFormat", "Survey", "formats", "surveys", "refresh", "catalogue_format", "read_catalogue",
           "with_survey_defaults"]

#: Modules of the package that hold no formats or surveys.
_HELPERS = {"registry", "tables"}


def _no_rules(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {}


@dataclass(frozen=True)
class CatalogueFormat:
    """How to read one catalogue format into the schema of :mod:`radiodet.schema`.

    ``reader(path, options)`` returns the schema's columns plus the file's own
    columns as ``orig_<name>``; ``options`` is the config's
    ``catalogue.<options_key>`` section (None for formats that take none).
    """

    reader: Callable[[Path, Mapping | None], pd.DataFrame]
    description: str
    #: name -> boolean mask of rows to skip, with the reason as the name.
    selection_rules: Callable[[pd.DataFrame], dict[str, np.ndarray]] = _no_rules
    #: size classes the format may contain
    size_classes: tuple[int, ...] = (1, 2, 3)
    #: header lines before the data of a text table (to name file lines in errors)
    header_lines: int = 0
    #: text file (errors name file lines) or a table (errors name 1-based rows)
    text: bool = True
    #: the catalogue section key holding this format's options (None: it takes none)
    options_key: str | None = None
    #: it has peak fluxes and a local rms: usable as the crosscheck's reference
    reference: bool = False

    def row_of(self, path: Path, index: int) -> int:
        """1-based file line (text) or table row (FITS) of the 0-based data row ``index``."""
        return line_of_row(path, self.header_lines, index) if self.text else index + 1


@dataclass(frozen=True)
class Survey:
    """A survey adapter: what differs between surveys, as config defaults."""

    description: str
    #: config keys this survey sets unless the config does (nested like the config)
    defaults: dict = field(default_factory=dict)


def _modules(package_path) -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(package_path)
                  if not info.name.startswith("_") and info.name not in _HELPERS)


@functools.cache
def _registry() -> tuple[dict[str, CatalogueFormat], dict[str, Survey]]:
    from .. import catalogues as package

    found_formats: dict[str, tuple[str, CatalogueFormat]] = {}
    found_surveys: dict[str, tuple[str, Survey]] = {}
    for name in _modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{name}")
        for attribute, found in (("FORMATS", found_formats), ("SURVEYS", found_surveys)):
            for key, value in getattr(module, attribute, {}).items():
                if key in found:
                    raise ConfigError(f"{attribute[:-1].lower()} {key!r} is defined twice: in "
                                      f"{found[key][0]} and in {module.__name__}")
                found[key] = (module.__name__, value)
    for key, (module, survey) in found_surveys.items():
        fmt = survey.defaults.get("catalogue", {}).get("format")
        if fmt is not None and fmt not in found_formats:
            raise ConfigError(f"survey {key!r} ({module}) defaults to catalogue format {fmt!r}, "
                              "which no module defines")
    return ({k: v for k, (_, v) in found_formats.items()}, {k: v for k, (_, v) in found_surveys.items()})


def formats() -> dict[str, CatalogueFormat]:
    """Every registered catalogue format, by name."""
    return dict(_registry()[0])


def surveys() -> dict[str, Survey]:
    """Every registered survey adapter, by name."""
    return dict(_registry()[1])


def refresh() -> None:
    """Forget what was found (after a module was added to the package path)."""
    _registry.cache_clear()


def catalogue_format(name: str, path: str | Path | None = None) -> CatalogueFormat:
    """The format called ``name``; the error lists the known ones (and names ``path``)."""
    known = formats()
    if name not in known:
        raise CatalogueError(path, f"unknown catalogue format {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def read_catalogue(path: str | Path, fmt: str, options: Mapping | None = None) -> pd.DataFrame:
    """Read ``path`` in format ``fmt``; ``options`` is the format's config section, if it takes one."""
    spec = catalogue_format(fmt, path)
    if options is not None and spec.options_key is None:
        raise ConfigError(f"catalogue format {fmt!r} takes no options (got {', '.join(options)})")
    return spec.reader(Path(path), options)


def _merge(defaults: dict, config: dict) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "classes":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_survey_defaults(config: dict) -> dict:
    """``config`` over the defaults of its ``adapter`` (default ``sdc1``)."""
    name = config.get("adapter", "sdc1")
    known = surveys()
    if name not in known:
        raise ConfigError(f"config key adapter: {name!r} is not one of {sorted(known)}")
    return _merge({"adapter": name, **known[name].defaults}, config)
