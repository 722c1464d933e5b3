"""Numbers as the text ``json.dumps`` writes for them, a whole column at a time.

The COCO files hold about twenty numbers per annotation, a million
annotations at SDC1 size; formatting each with ``repr`` (and ``round``) in
Python was the COCO stage's main cost. Here a column becomes an Arrow string
array, character for character what ``json.dumps`` writes for each value of
the Python list (so the files decode, and read, as before):

* :func:`json_ints`: ``str(int(v))``.
* :func:`json_rounded`: ``repr(round(v, digits))``. The rounding is done in
  integers: ``k = rint(v * 10**digits)`` is Python's correctly rounded
  half-even choice except within a few ulp of a half-way point, and ``k /
  10**digits`` is then the double Python's ``round`` returns (the nearest one
  to the same decimal), whose shortest ``repr`` is that decimal, written
  from the integer's digits. Values near a half-way point, too large for the
  integer path (``|v| * 10**digits >= 1e15``), small enough for ``repr`` to
  switch to an exponent, or not finite go through Python's own ``round`` and
  ``repr``.
* :func:`json_floats`: ``repr(v)`` (NaN, Infinity, -Infinity as
  ``json.dumps`` writes them): Arrow's shortest round-trip text, laid out
  as ``repr`` lays it out.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["round_like_python", "json_ints", "json_rounded", "rounded_json", "json_floats"]

#: beyond this |v| * 10**digits the integer path is not used (15 significant digits: repr is the decimal)
_INTEGER_LIMIT = 1e15


def _rounding(values: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, exact): ``k = rint(values * 10**digits)`` and where it is Python's rounding, written from k's digits."""
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * 10.0**digits
        k = np.rint(scaled)
        # within 4 ulp of a half-way point the product's rounding error could tip the choice
        near_half = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) <= 4.0 * np.spacing(np.abs(scaled))
        exact = np.isfinite(scaled) & (np.abs(scaled) < _INTEGER_LIMIT) & ~near_half
        # repr writes 0 < |x| < 1e-4 with an exponent: not from the digits here
        exact &= (k == 0) | (np.abs(k) >= 10.0 ** (digits - 4))
    return k, exact


def _rounded(values: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Python's ``round`` of each value, k, exact) (:func:`_rounding`; the inexact ones rounded by Python)."""
    k, exact = _rounding(values, digits)
    with np.errstate(invalid="ignore"):
        out = k / 10.0**digits
    for i in np.flatnonzero(~exact):
        out[i] = round(float(values[i]), digits)
    return out, k, exact


def round_like_python(values, digits: int) -> np.ndarray:
    """``[round(v, digits) for v in values]`` as float64, bit for bit (``digits`` >= 0)."""
    return _rounded(np.asarray(values, dtype=np.float64), digits)[0]


@lru_cache(maxsize=None)
def _fractions(digits: int) -> pa.Array:
    """Text after the decimal point of f / 10**digits for f in [0, 10**digits): trailing zeros dropped, "0" for 0."""
    return pa.array([f"{f:0{digits}d}".rstrip("0") or "0" for f in range(10**digits)], type=pa.string())


def json_ints(values) -> pa.Array:
    """``str(int(v))`` of each value (int64)."""
    return pc.cast(pa.array(np.asarray(values).astype(np.int64)), pa.string())


def rounded_json(values, digits: int) -> tuple[np.ndarray, pa.Array]:
    """``round(v, digits)`` of each value (:func:`round_like_python`) and its ``json.dumps`` text."""
    if not 1 <= digits <= 9:
        raise ValueError(f"digits must be 1 to 9, got {digits}")
    rounded, k, exact = _rounded(np.asarray(values, dtype=np.float64), digits)
    magnitude = np.where(exact, np.abs(k), 0.0).astype(np.int64)
    whole, fraction = np.divmod(magnitude, 10**digits)
    text = pc.binary_join_element_wise(
        pa.array(np.where(np.signbit(k) & exact, "-", "")), pc.cast(pa.array(whole), pa.string()), ".",
        _fractions(digits).take(pa.array(fraction)), "")
    return rounded, _in_python(rounded, text, exact)


def json_rounded(values, digits: int) -> pa.Array:
    """``json.dumps(round(v, digits))`` of each value: the text of Python's rounded float."""
    return rounded_json(values, digits)[1]


#: Arrow's positional text of 0 < |v| < 1: sign, the zeros after the point, the first digit, the rest
_SMALL_POSITIONAL = r"^(?P<sign>-?)0\.(?P<zeros>0*)(?P<first>[1-9])(?P<rest>[0-9]*)$"
#: Arrow's exponent text: mantissa, exponent sign, exponent digits
_EXPONENT = r"^(?P<mantissa>-?[1-9](?:\.[0-9]+)?)e(?P<sign>[+-])(?P<digits>[0-9]+)$"


def _in_python(values: np.ndarray, text: pa.Array, done: np.ndarray) -> pa.Array:
    """``text`` with the values not ``done`` written by ``json.dumps`` itself."""
    others = np.flatnonzero(~done)
    if not len(others):
        return text
    replacements = pa.array([json.dumps(float(values[i])) for i in others], pa.string())
    return pc.replace_with_mask(text, pa.array(~done), replacements)


def json_floats(values) -> pa.Array:
    """``json.dumps(float(v))`` of each value: ``repr``, or NaN, Infinity, -Infinity.

    Arrow's float-to-text cast writes the same shortest round-trip digits as
    ``repr`` but lays them out its own way (positional for 1e-6 <= |v| <
    1e10, no ".0" on whole numbers, exponents without a leading zero); that
    layout is rewritten into ``repr``'s (positional for 1e-4 <= |v| < 1e16,
    else d.ddde-XX). Values in neither form, and any text that does not read
    back as the same double, are written by Python.
    """
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return pa.array([], pa.string())
    text = pc.cast(pa.array(values), pa.string())
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        positional_here = (magnitude >= 1e-4) & (magnitude < 1e16)
        exponent_here = np.isfinite(values) & ~positional_here & (values != 0)
    has_point = np.asarray(pc.match_substring(text, "."), dtype=bool)
    has_letter = np.asarray(pc.match_substring_regex(text, "[a-z]"), dtype=bool)  # e, nan, inf
    # positional in both: as it is, or with repr's ".0" on a whole number
    keep = positional_here & ~has_letter
    text = pc.if_else(pa.array(keep & ~has_point), pc.binary_join_element_wise(text, ".0", ""), text)
    done = keep
    # 1e-6 <= |v| < 1e-4: Arrow's 0.0000ddd -> d.dde-0X
    small = pc.extract_regex(text, _SMALL_POSITIONAL)
    is_small = exponent_here & np.asarray(small.is_valid(), dtype=bool)
    if is_small.any():
        rest = small.field("rest")
        exponent = pc.cast(pc.add(pc.utf8_length(small.field("zeros")), 1), pa.string())
        written = pc.binary_join_element_wise(
            small.field("sign"), small.field("first"),
            pc.if_else(pc.equal(pc.utf8_length(rest), 0), "", pc.binary_join_element_wise(".", rest, "")),
            "e-", pc.utf8_lpad(exponent, width=2, padding="0"), "")
        text = pc.if_else(pa.array(is_small), written, text)
        done = done | is_small
    # an exponent in both: repr writes at least two exponent digits
    power = pc.extract_regex(text, _EXPONENT)
    is_power = exponent_here & ~done & np.asarray(power.is_valid(), dtype=bool)
    if is_power.any():
        written = pc.binary_join_element_wise(power.field("mantissa"), "e", power.field("sign"),
                                              pc.utf8_lpad(power.field("digits"), width=2, padding="0"), "")
        text = pc.if_else(pa.array(is_power), written, text)
        done = done | is_power
    # a text that would not read back as the same double is not kept
    with np.errstate(invalid="ignore"):
        parsed = np.asarray(pc.cast(pc.if_else(pa.array(done), text, "0"), pa.float64()), dtype=np.float64)
    done &= parsed.view(np.int64) == values.view(np.int64)
    return _in_python(values, text, done)
