"""Vectorised JSON numbers: character for character what json.dumps writes for Python's round and repr."""

import json

import numpy as np
import pytest

from radiodet.jsontext import json_floats, json_ints, json_rounded, round_like_python, rounded_json


def _values(n: int = 200_000) -> np.ndarray:
    """Pixel coordinates, box sizes, fluxes (Jy), angles, responses at real scales, and the awkward values."""
    rng = np.random.default_rng(11)
    pixels = rng.uniform(-1, 32768, n)
    sizes = rng.lognormal(1.5, 1.0, n)
    fluxes = 10.0 ** rng.uniform(-7, 1, n)
    signed = rng.normal(0, 1, n) * 10.0 ** rng.integers(-9, 16, n)
    # half-way points of the 4th, 3rd and 6th decimal (as decimals: their doubles lie just off the tie)
    ties = np.concatenate([(rng.integers(-10**7, 10**7, n // 10) + 0.5) / 10.0**d for d in (3, 4, 6)])
    special = np.array([0.0, -0.0, 5e-5, -5e-5, 0.00005, 0.00015, 0.00025, 1e-4, 9.99995e-5, 2.5, 0.125,
                        1e14, 1e15, 1e16, 123456789012.34567, -1e-300, 5e-324, 1.7976931348623157e308,
                        np.nan, np.inf, -np.inf, 0.5e-6, 1.5e-6, 4.99999e-7, 0.1 + 0.2])
    return np.concatenate([pixels, sizes, fluxes, signed, ties, special, np.nextafter(ties, np.inf),
                           np.nextafter(ties, -np.inf)])


@pytest.mark.parametrize("digits", [3, 4, 6])
def test_rounded_numbers_are_json_dumps_of_pythons_round(digits):
    values = _values()
    expected = [json.dumps(round(v, digits)) for v in values.tolist()]
    assert json_rounded(values, digits).to_pylist() == expected
    rounded = round_like_python(values, digits)
    python = np.array([round(v, digits) for v in values.tolist()])
    same = (rounded.view(np.int64) == python.view(np.int64)) | (np.isnan(rounded) & np.isnan(python))
    assert same.all()  # bit for bit, the sign of zero included
    both, text = rounded_json(values, digits)
    assert np.array_equal(both.view(np.int64), rounded.view(np.int64)) and text.to_pylist() == expected


def test_floats_and_ints_are_json_dumps():
    values = _values()
    assert json_floats(values).to_pylist() == [json.dumps(v) for v in values.tolist()]
    ints = np.array([0, -1, 7, 2**53 + 1, np.iinfo(np.int64).max, np.iinfo(np.int64).min], dtype=np.int64)
    assert json_ints(ints).to_pylist() == [json.dumps(v) for v in ints.tolist()]
    assert json_rounded(np.array([]), 4).to_pylist() == []
    with pytest.raises(ValueError, match="digits must be 1 to 9"):
        json_rounded(values, 0)
