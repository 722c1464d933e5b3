"""The config schema is the one place a default is written: the stage config classes agree with it."""

import dataclasses

import pytest

from radiodet.classification import StampConfig
from radiodet.configuration import section_defaults
from radiodet.cutouts import CutoutConfig
from radiodet.detector.faster_rcnn import FasterRCNNConfig
from radiodet.detector.heatmap import HeatmapConfig
from radiodet.detector.measure import MeasureConfig
from radiodet.detector.predict import PredictConfig
from radiodet.detector.train import TrainConfig
from radiodet.simulate import SimulationConfig
from radiodet.views import ViewConfig

STAGE_CONFIGS = [
    (CutoutConfig, ("cutouts",)), (ViewConfig, ("views",)), (StampConfig, ("classification",)),
    (SimulationConfig, ("simulate",)), (PredictConfig, ("predict",)), (MeasureConfig, ("predict", "measure")),
    (TrainConfig, ("train",)), (HeatmapConfig, ("model", "heatmap")), (FasterRCNNConfig, ("model", "faster_rcnn")),
]


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("cls, keys", STAGE_CONFIGS, ids=[c.__name__ for c, _ in STAGE_CONFIGS])
def test_stage_config_defaults_equal_the_schema(cls, keys):
    schema = section_defaults(*keys)
    compared = 0
    for field in dataclasses.fields(cls):
        value = _default(field)
        if field.name not in schema or value is dataclasses.MISSING or dataclasses.is_dataclass(value):
            continue
        value = list(value) if isinstance(value, tuple) else value
        assert value == schema[field.name], f"{cls.__name__}.{field.name} = {value!r}, schema " \
                                            f"{'.'.join(keys)}.{field.name} default {schema[field.name]!r}"
        compared += 1
    assert compared >= 1
