"""The columnar unit of work on the hot path: many samples of many series as parallel arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.series import DROPPED

IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def oldest_and_newest_per_series(series: IdArray, timestamps: FloatArray) -> tuple[IdArray, IdArray]:
    """Positions of each series' oldest and of its newest sample, each in series order (a tie: the
    earlier in the arrays is the oldest, the later the newest), from one sort."""
    order = np.lexsort((timestamps, series))  # stable: equal (series, time) keep their order
    s = series[order]
    first = np.ones(order.size, dtype=bool)
    last = np.ones(order.size, dtype=bool)
    first[1:] = last[:-1] = s[1:] != s[:-1]
    return np.asarray(order[first], dtype=np.int64), np.asarray(order[last], dtype=np.int64)


def newest_per_series(series: IdArray, timestamps: FloatArray) -> IdArray:
    """Positions of each series' newest sample, in series order (a tie: the later in the arrays)."""
    return oldest_and_newest_per_series(series, timestamps)[1]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Samples as three parallel arrays: series id, timestamp (Unix seconds), value.

    A batch never holds one Python object per sample; detectors work on it with numpy.
    """

    series: IdArray
    timestamps: FloatArray
    values: FloatArray

    def __post_init__(self) -> None:
        n = self.series.shape[0]
        if self.series.ndim != 1 or self.timestamps.shape != (n,) or self.values.shape != (n,):
            msg = (
                "SampleBatch arrays must be one-dimensional and of equal length, got "
                f"series {self.series.shape}, timestamps {self.timestamps.shape}, values {self.values.shape}"
            )
            raise ValueError(msg)

    @classmethod
    def from_arrays(
        cls,
        series: Sequence[int] | npt.ArrayLike,
        timestamps: Sequence[float] | npt.ArrayLike,
        values: Sequence[float] | npt.ArrayLike,
    ) -> SampleBatch:
        """Build a batch, converting to the canonical dtypes."""
        return cls(
            np.asarray(series, dtype=np.int64),
            np.asarray(timestamps, dtype=np.float64),
            np.asarray(values, dtype=np.float64),
        )

    @classmethod
    def empty(cls) -> SampleBatch:
        """A batch of no samples."""
        return cls.from_arrays([], [], [])

    @classmethod
    def concat(cls, batches: Sequence[SampleBatch]) -> SampleBatch:
        """One batch holding all samples of ``batches`` in order."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            np.concatenate([b.series for b in batches]),
            np.concatenate([b.timestamps for b in batches]),
            np.concatenate([b.values for b in batches]),
        )

    def __len__(self) -> int:
        return int(self.series.shape[0])

    def select(self, mask: npt.NDArray[np.bool_]) -> SampleBatch:
        """The samples where ``mask`` is true."""
        return SampleBatch(self.series[mask], self.timestamps[mask], self.values[mask])

    def without_dropped(self) -> SampleBatch:
        """The samples whose series was registered (drops :data:`DROPPED` ids)."""
        keep = self.series != DROPPED
        return self if bool(keep.all()) else self.select(keep)
