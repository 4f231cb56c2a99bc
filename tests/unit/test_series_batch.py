"""SeriesKey, SeriesRegistry and SampleBatch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import SampleBatch, SeriesKey, SeriesRegistry
from detectors.series import DROPPED


def test_key_sorts_labels_and_drops_name_label() -> None:
    a = SeriesKey.of("up", {"job": "api", "__name__": "up", "instance": "a:1"})
    b = SeriesKey.of("up", [("instance", "a:1"), ("job", "api")])
    assert a == b
    assert a.labels == (("instance", "a:1"), ("job", "api"))
    assert str(a) == 'up{instance="a:1",job="api"}'
    assert hash(a) == hash(b)


def test_registry_gives_dense_ids_and_is_stable() -> None:
    reg = SeriesRegistry(limit=10)
    ids = [reg.id_for(SeriesKey.of("m", {"i": str(i)})) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert reg.id_for(SeriesKey.of("m", {"i": "3"})) == 3
    assert reg.key(2) == SeriesKey.of("m", {"i": "2"})
    assert len(reg) == 5


def test_registry_drops_and_counts_past_the_limit() -> None:
    reg = SeriesRegistry(limit=3)
    for i in range(10):
        reg.id_for(SeriesKey.of("m", {"i": str(i)}))
    assert len(reg) == 3
    assert reg.dropped == 7
    assert reg.id_for(SeriesKey.of("m", {"i": "9"})) == DROPPED
    assert reg.dropped == 8
    # known series still resolve after the limit is hit
    assert reg.id_for(SeriesKey.of("m", {"i": "0"})) == 0
    assert reg.lookup(SeriesKey.of("m", {"i": "9"})) is None


def test_bulk_registration_matches_one_by_one_and_leaves_drops_to_the_caller() -> None:
    keys = [SeriesKey.of("m", {"i": str(i % 4)}) for i in range(8)] + [SeriesKey.of("m", {"i": "x"})]
    one = SeriesRegistry(limit=3)
    bulk = SeriesRegistry(limit=3)
    expected = [one.id_for(k) for k in keys]
    assert bulk.ids_for(keys) == expected == [0, 1, 2, DROPPED, 0, 1, 2, DROPPED, DROPPED]
    assert bulk.keys() == one.keys()
    assert bulk.dropped == 0  # the caller counts refused samples; id_for counted them one by one
    assert one.dropped == 3


def test_presorted_key_equals_the_key_of_the_same_labels() -> None:
    key = SeriesKey.presorted("up", (("instance", "a:1"), ("job", "api")))
    same = SeriesKey.of("up", {"job": "api", "instance": "a:1"})
    assert key == same
    assert hash(key) == hash(same)
    assert {same: 1}[key] == 1
    with pytest.raises(AttributeError):
        key.name = "down"  # type: ignore[misc]  # still frozen


def test_registry_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SeriesRegistry(limit=0)


@given(st.lists(st.text(max_size=3), max_size=200), st.integers(min_value=1, max_value=20))
def test_registry_memory_is_bounded_by_the_limit(names: list[str], limit: int) -> None:
    reg = SeriesRegistry(limit=limit)
    for n in names:
        reg.id_for(SeriesKey.of("m", {"n": n}))
    distinct = len(set(names))
    assert len(reg) == min(limit, distinct)
    assert len(reg) + reg.dropped >= min(len(names), distinct)


def test_batch_requires_parallel_arrays() -> None:
    with pytest.raises(ValueError, match="equal length"):
        SampleBatch.from_arrays([0, 1], [1.0], [2.0, 3.0])


def test_batch_concat_select_and_without_dropped() -> None:
    a = SampleBatch.from_arrays([0, DROPPED], [1.0, 2.0], [10.0, 20.0])
    b = SampleBatch.from_arrays([1], [3.0], [30.0])
    c = SampleBatch.concat([a, b])
    assert len(c) == 3
    assert c.series.dtype == np.int64
    kept = c.without_dropped()
    assert kept.series.tolist() == [0, 1]
    assert kept.values.tolist() == [10.0, 30.0]
    assert len(SampleBatch.concat([])) == 0
