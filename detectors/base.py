"""The detector contract, shared by every detector family.

A detector consumes :class:`~detectors.batch.SampleBatch` es and returns one score in ``[0, 1]``
per sample, higher meaning more anomalous. It is causal (the score of a sample depends only on
samples at or before it), keeps per-series state in arrays indexed by series id, and can export
and restore that state so the daemon can checkpoint and resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from detectors.batch import FloatArray, SampleBatch
from detectors.signal import SignalKind


class DetectorError(ValueError):
    """A detector was given parameters or state it cannot use; the message names which."""


@runtime_checkable
class Detector(Protocol):
    """Scores samples of many series at once.

    Optional hook, not part of the protocol (so existing detectors need not define it): a
    detector may have ``signal_value(series_id: int) -> float | None``. The
    :class:`~detectors.bank.DetectorBank` then calls it for each signal it raises from the
    detector's latest :meth:`update` and, when it returns a number, uses that as the signal's
    value instead of the sample's (the forecast detector reports its forecast's upper bound).
    """

    name: str
    signal_kind: SignalKind

    def update(self, batch: SampleBatch) -> FloatArray:
        """Learn from ``batch`` and return one score in ``[0, 1]`` per sample, in batch order."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The learned state, as plain values and numpy arrays."""
        ...

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict`."""
        ...

    def signal_details(self, series_id: int) -> dict[str, Any]:
        """Extra facts to put on a signal raised for ``series_id`` (the rule that fired, ...)."""
        ...


def grow(array: np.ndarray[Any, Any], size: int, fill: float | int) -> np.ndarray[Any, Any]:
    """``array`` with at least ``size`` rows (amortised doubling), new rows set to ``fill``."""
    if size <= array.shape[0]:
        return array
    new_size = max(size, 2 * array.shape[0], 64)
    out = np.full((new_size, *array.shape[1:]), fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out
