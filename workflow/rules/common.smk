# Configuration, the field table, wildcard constraints and input functions.

import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

# The scripts import the radiodet package from src/ (also inside conda envs
# and on cluster nodes: jobs inherit the environment of the submitting run).
# PYTHONPATH is set here, not required from the user.
_SRC = str(Path(workflow.basedir) / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from radiodet.catalogues import with_survey_defaults  # noqa: E402
from radiodet.configuration import validate_config  # noqa: E402
from radiodet.parts import planned_parts  # noqa: E402

# The survey adapter fills what the config leaves out, then the schema (with
# the registered adapters and formats as its enums) fills its defaults and
# checks it.
_merged = with_survey_defaults(config)
config.clear()
config.update(_merged)
validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")

from radiodet.db import connection_url  # noqa: E402

# a password in database.url is refused before anything runs (and never echoed)
connection_url(config["database"]["url"], environ={})

_PYTHONPATH = os.environ.get("PYTHONPATH", "")
if _SRC not in _PYTHONPATH.split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (_SRC, _PYTHONPATH) if p))
# Arrow's buffers from the C library's allocator rather than pyarrow's default mimalloc pool:
# reading the 5.25 M-row SDC1-size catalogue took 1.4-2.2 s of kernel time instead of 3.7-4.3 s
# (same peak memory), the rest of the stages the same either way. A user's own setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

SURVEY = config["survey"]
RESULTS = f"results/{SURVEY}"

FIELDS = pd.read_csv(config["fields"], sep="\t", dtype=str, keep_default_na=False, comment="#")
FIELDS = FIELDS.set_index("field", drop=False)
validate(FIELDS, schema="../schemas/fields.schema.yaml")
if FIELDS.index.has_duplicates:
    raise ValueError(f"{config['fields']}: duplicate field names {sorted(FIELDS.index[FIELDS.index.duplicated()])}")
FIELD_NAMES = list(FIELDS.index)


def _simulated_shape(field):
    """(ny, nx) of a field the simulate rule writes (its image may not be there yet), else None."""
    simulate = config["simulate"]
    if simulate["activate"] and any(f["name"] == field for f in simulate.get("fields", [])):
        return (simulate["size"], simulate["size"])
    return None


# How many jobs cut each field (cutouts.max_per_job), known from the headers
# before the run: a field of one part is cut by rule cutouts, a bigger one by
# rule cutouts_part per run of rows of cutouts, gathered by rule cutouts_gather.
CUTOUT_PARTS = {}
for _field in FIELD_NAMES:
    _shape = _simulated_shape(_field)
    if _shape is None and not Path(FIELDS.loc[_field, "image"]).exists():
        print(
            f"field {_field}: {FIELDS.loc[_field, 'image']} is not there yet (an earlier rule makes it), so one job "
            "cuts it; a run started after it exists splits it by cutouts.max_per_job",
            file=sys.stderr,
        )
    CUTOUT_PARTS[_field] = planned_parts(FIELDS.loc[_field, "image"], config["cutouts"], shape=_shape)
PARTS = f"{RESULTS}/parts"
# Ingest -> index -> filter -> boxes -> coco is the dataset's longest chain; the
# views only feed coco at its end. With few cores the scheduler must start a
# chain job before views jobs that are ready at the same moment, or the views of
# a big field hold every core while the index waits (the full SDC1 field: 40 s).
CRITICAL_PATH = 10
# The index needs both the staged sources and every part's manifest. The parts
# of a field cut in parts go before the sources' staging (after the ingest): the
# field's cutouts, then its views, are ready early and the staging runs beside
# the views. Full SDC1 field, 2 cores: cutouts 22.2 -> 14.8 s, the index started
# 22.9 / 23.0 s into the build either way. A field cut by one job keeps no priority.
CUTOUT_PARTS_FIRST = CRITICAL_PATH - 3
STAGING = CRITICAL_PATH - 5


def fields_regex(fields):
    """A wildcard constraint matching exactly these field names (nothing when there are none)."""
    return "|".join(re.escape(f) for f in fields) or "(?!)"


ONE_JOB_FIELDS = fields_regex([f for f in FIELD_NAMES if CUTOUT_PARTS[f] == 1])
SPLIT_FIELDS = fields_regex([f for f in FIELD_NAMES if CUTOUT_PARTS[f] > 1])


def field_part_paths(field, name):
    """``name`` (a file or directory of a part) of every part of ``field``, in part order."""
    return [f"{PARTS}/{field}/{k:03d}/{name}" for k in range(CUTOUT_PARTS[field])]


def part_paths(name):
    """Input function: ``name`` (a file or directory of a part) of every part of the field, in part order."""

    def paths(wildcards):
        return field_part_paths(wildcards.field, name)

    return paths


if "png" not in config["views"]["formats"]:
    raise ValueError("views.formats must include png: the COCO images are the PNG views")
try:
    CLASSES = {int(k): v for k, v in config["classes"].items()}
except ValueError:
    raise ValueError(f"config classes: the keys must be integer class codes, got {list(config['classes'])}") from None


wildcard_constraints:
    survey=re.escape(SURVEY),
    field=fields_regex(FIELD_NAMES),
    part=r"\d{3}",


def field_value(field, column):
    """A field-table value, or None when the column is absent or empty."""
    value = FIELDS.loc[field].get(column, "")
    return value or None


def field_centres():
    """{field: (RA, Dec)} from the field table's centre_ra/centre_dec, None where absent."""
    centres = {}
    for field in FIELD_NAMES:
        ra, dec = field_value(field, "centre_ra"), field_value(field, "centre_dec")
        centres[field] = (float(ra), float(dec)) if ra and dec else None
    return centres


def get_image(wildcards):
    return FIELDS.loc[wildcards.field, "image"]


def get_primary_beam(wildcards):
    """The field's primary-beam image as a named input, when it has one."""
    path = field_value(wildcards.field, "primary_beam")
    return {"primary_beam": path} if path else {}


def get_field_images(wildcards):
    """Every field's image (and rms map, where listed), as named inputs."""
    inputs = {f"image_{field}": FIELDS.loc[field, "image"] for field in FIELD_NAMES}
    inputs.update(
        {f"rms_{field}": field_value(field, "rms_map") for field in FIELD_NAMES if field_value(field, "rms_map")}
    )
    return inputs


def get_manifests(wildcards):
    return expand(f"{RESULTS}/cutouts/{{field}}/manifest.parquet", field=FIELD_NAMES)


def get_index_manifests(wildcards):
    """The index's manifests: a field's own, or its parts' (in part order) where several jobs cut it.

    The parts' manifests concatenate to the gathered one, so the index need not
    wait for the gathering (its 25,600 hard links for an SDC1 field).
    """
    paths = []
    for field in FIELD_NAMES:
        if CUTOUT_PARTS[field] > 1:
            paths += field_part_paths(field, "manifest.parquet")
        else:
            paths.append(f"{RESULTS}/cutouts/{field}/manifest.parquet")
    return paths


def get_views(wildcards):
    return expand(f"{RESULTS}/views/{{field}}", field=FIELD_NAMES)


def get_filter_maps(wildcards):
    """rms maps and primary beams the filter needs, as named inputs."""
    maps = {}
    for field in FIELD_NAMES:
        if config["filter"]["noise"] in ("map", "auto") and field_value(field, "rms_map"):
            maps[f"rms_{field}"] = field_value(field, "rms_map")
        if config["filter"]["primary_beam"] and field_value(field, "primary_beam"):
            maps[f"pb_{field}"] = field_value(field, "primary_beam")
    return maps


def training_settings():
    """The JSON the training module takes: config model (the chosen kind's section only, so
    editing the other kind's settings does not retrain) + train (minus the switch)."""
    kind = config["model"]["kind"]
    model = {"kind": kind, "init_checkpoint": config["model"]["init_checkpoint"], kind: config["model"][kind]}
    train = {k: v for k, v in config["train"].items() if k != "activate"}
    return json.dumps({"model": model, "train": train}, sort_keys=True)


def get_final_targets():
    """What `rule all` builds, from config `datasets`, `crosscheck`, `train`, `score`."""
    targets = []
    if config["datasets"]["detection"]:
        targets += [f"{RESULTS}/coco", f"{RESULTS}/preview", f"{RESULTS}/plots/dataset_statistics.png"]
        if config["crosscheck"].get("activate"):
            targets.append(f"{RESULTS}/crosscheck/crosscheck.json")
        if config["train"]["activate"]:
            targets.append(f"{RESULTS}/plots/training_loss.png")
            if config["score"]["activate"]:
                targets += [f"{RESULTS}/score/scores.csv", f"{RESULTS}/score/completeness_precision.png"]
            else:
                targets += expand(f"{RESULTS}/predict/{{field}}.parquet", field=FIELD_NAMES)
    if config["datasets"]["classification"]:
        targets.append(f"{RESULTS}/classification")
    if config["datasets"]["ssl"]:
        targets.append(f"{RESULTS}/ssl/crops.parquet")
    return targets
