"""The forecaster registry: configuration names to the built-in forecaster families."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors.base import DetectorError
from detectors.forecast import Forecaster
from detectors.holtwinters import HoltWintersForecaster
from detectors.regression_forecast import RegressionForecaster

#: Built-in forecasters by configuration name.
FORECASTERS: Mapping[str, type[HoltWintersForecaster] | type[RegressionForecaster]] = {
    HoltWintersForecaster.name: HoltWintersForecaster,
    RegressionForecaster.name: RegressionForecaster,
}

#: The forecaster ``aiops forecast`` uses when none is named (the more accurate of the two in
#: the forecast benchmark, tests/bench/test_forecast_accuracy.py).
DEFAULT_FORECASTER = RegressionForecaster.name


def build_forecaster(
    name: str, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> Forecaster:
    """Construct a built-in forecaster by name.

    ``defaults`` are values the caller knows (the sampling ``step``, the ``max_horizon`` it
    will ask for); each is used only if the forecaster has that parameter and ``params``
    leaves it out.
    """
    cls = FORECASTERS.get(name)
    if cls is None:
        raise DetectorError(f"unknown forecaster {name!r}; built-in forecasters: {sorted(FORECASTERS)}")
    if not isinstance(params, Mapping):
        raise DetectorError(f"{name}: parameters must be a mapping, got {type(params).__name__}")
    merged = {k: v for k, v in (defaults or {}).items() if k in cls.PARAMS}
    merged.update(params)
    return cls.from_params(merged)
