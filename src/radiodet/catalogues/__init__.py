"""Catalogue formats: survey catalogue files -> the schema of :mod:`radiodet.schema`.

One module per format family (:mod:`.sdc1`, :mod:`.pybdsf` for PyBDSF lists
and LoTSS, :mod:`.mgcls`, :mod:`.mirabest`, :mod:`.generic` for any ordinary
table with a column map in the config), on the shared helpers of
:mod:`.tables`. Each module registers its formats and survey adapters in
``FORMATS`` and ``SURVEYS``; :mod:`.registry` finds them, so adding a survey
is one module here plus its config.

A reader returns the documented columns plus the file's own columns prefixed
``orig_``. The ingest stage (:mod:`radiodet.ingest`) validates the result and
writes Parquet.
"""

from .registry import (
    CatalogueFormat,
    Survey,
    catalogue_format,
    formats,
    read_catalogue,
    refresh,
    surveys,
    with_survey_defaults,
)

__all__ = ["CatalogueFormat", "Survey", "catalogue_format", "formats", "read_catalogue", "refresh", "surveys",
           "with_survey_defaults"]
