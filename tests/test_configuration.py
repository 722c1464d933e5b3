"""The config schema is the one place a default is written: the stage config classes take theirs from it."""

import dataclasses

import pytest

from radiodet.classification import StampConfig
from radiodet.configuration import schema_config, section_defaults
from radiodet.cutouts import CutoutConfig
from radiodet.detector.faster_rcnn import FasterRCNNConfig
from radiodet.detector.heatmap import HeatmapConfig, resolve_config
from radiodet.detector.measure import MeasureConfig
from radiodet.detector.predict import PredictConfig
from radiodet.detector.train import TrainConfig
from radiodet.errors import ConfigError
from radiodet.simulate import SimulationConfig
from radiodet.views import ViewConfig

STAGE_CONFIGS = [
    (CutoutConfig, ("cutouts",)), (ViewConfig, ("views",)), (StampConfig, ("classification",)),
    (SimulationConfig, ("simulate",)), (PredictConfig, ("predict",)), (MeasureConfig, ("predict", "measure")),
    (TrainConfig, ("train",)), (HeatmapConfig, ("model", "heatmap")), (FasterRCNNConfig, ("model", "faster_rcnn")),
]


@pytest.mark.parametrize("cls, keys", STAGE_CONFIGS, ids=[c.__name__ for c, _ in STAGE_CONFIGS])
def test_stage_config_defaults_are_the_schema_defaults(cls, keys):
    assert cls.config_section == keys
    schema = section_defaults(*keys)
    built = cls()
    compared = 0
    for field in dataclasses.fields(cls):
        if field.name not in schema or dataclasses.is_dataclass(getattr(built, field.name)):
            continue
        value = getattr(built, field.name)
        value = list(value) if isinstance(value, tuple) else value
        assert value == schema[field.name], f"{cls.__name__}.{field.name} = {value!r}, schema " \
                                            f"{'.'.join(keys)}.{field.name} default {schema[field.name]!r}"
        compared += 1
    assert compared >= 3


@pytest.mark.parametrize("cls, keys", STAGE_CONFIGS, ids=[c.__name__ for c, _ in STAGE_CONFIGS])
def test_stage_config_refuses_an_unknown_key_naming_it(cls, keys):
    with pytest.raises(ConfigError, match=r"config key " + r"\.".join(keys) + r"\.no_such_key: not a setting"):
        cls.from_config({"no_such_key": 1})


def test_no_default_is_written_in_the_class_for_a_schema_key(tmp_path):
    """Changing the schema's default changes the class's: nothing else holds it."""
    schema = tmp_path / "schema.yaml"
    schema.write_text("properties:\n  toy:\n    type: object\n    properties:\n"
                      "      size: {type: integer, default: 7}\n      stretch: {type: array, default: [1, 2]}\n")

    @schema_config("toy", schema_path=schema)
    class Toy:
        size: int
        stretch: tuple[int, ...]
        internal: str = "kept"

    assert Toy() == Toy(size=7, stretch=(1, 2), internal="kept")
    assert Toy.from_config({"stretch": [3, 4]}).stretch == (3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Toy().size = 3


def test_a_field_without_a_default_anywhere_is_refused_at_import():
    with pytest.raises(ConfigError, match=r"Missing\.nowhere: no default in the config schema section 'cutouts'"):
        @schema_config("cutouts")
        class Missing:
            nowhere: int


def test_nested_sections_and_lists():
    config = PredictConfig.from_config({"tile": 256, "measure": {"free_snr": 8.0}})
    assert config.tile == 256 and config.measure == MeasureConfig(free_snr=8.0)
    assert config.measure.radius_sigmas == section_defaults("predict", "measure")["radius_sigmas"]
    assert ViewConfig.from_config({"percentiles": [1, 99], "formats": ["png"]}).percentiles == (1, 99)
    with pytest.raises(ConfigError, match=r"predict\.measure\.radius: not a setting"):
        PredictConfig.from_config({"measure": {"radius": 8}})
    # a section's keys that the rule reads, not the class, pass through
    assert TrainConfig.from_config({"activate": True, "epochs": 3}).epochs == 3
    assert SimulationConfig.from_config({"fields": [], "activate": True, "catalogue": "x", "size": 64}).size == 64
    assert resolve_config({"width": 8}, None, 2) == HeatmapConfig(num_classes=2, width=8)
