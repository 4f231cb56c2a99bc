"""One JSON loader for what comes from outside: nesting past the decoder's depth is bad JSON."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from remediations.jsontext import NestedTooDeep, loads
from simulations.twin.api import _json
from simulations.twin.errors import ApiError


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000, b"[" * 100_000])
def test_nesting_past_the_decoders_depth_is_a_decode_error_not_a_recursion_error(text: str | bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as info:
        loads(text)
    assert isinstance(info.value, NestedTooDeep)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == info.value.msg == "nested too deep"


def test_other_json_reads_as_json_loads_reads_it() -> None:
    assert loads('{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert loads(b"[1]") == [1]
    assert math.isnan(loads("NaN"))  # the agent's own records may hold it
    assert loads("[" * 500 + "]" * 500) is not None  # deep, but within the decoder's depth
    with pytest.raises(json.JSONDecodeError) as info:
        loads('{"a": }')
    assert not isinstance(info.value, NestedTooDeep)
    assert info.value.colno == 7


def test_the_error_survives_a_trip_between_processes() -> None:
    error = pickle.loads(pickle.dumps(NestedTooDeep()))
    assert isinstance(error, NestedTooDeep)
    assert str(error) == "nested too deep"


def test_the_twin_api_answers_400_to_a_body_nested_too_deep() -> None:
    with pytest.raises(ApiError) as info:
        _json(b"[" * 100_000)
    assert info.value.code == 400
    assert "json parse error: nested too deep" in info.value.message
