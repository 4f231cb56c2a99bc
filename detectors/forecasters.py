"""The forecaster registry: configuration names to the built-in forecaster families."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors.base import DetectorError
from detectors.forecast import Forecaster
from detectors.forecast_select import SelectingForecaster
from detectors.holtwinters import HoltWintersForecaster
from detectors.regression_forecast import RegressionForecaster

#: Built-in forecasters by configuration name.
FORECASTERS: Mapping[
    str, type[HoltWintersForecaster] | type[RegressionForecaster] | type[SelectingForecaster]
] = {
    HoltWintersForecaster.name: HoltWintersForecaster,
    RegressionForecaster.name: RegressionForecaster,
    SelectingForecaster.name: SelectingForecaster,
}

#: The forecaster used when none is named (``aiops forecast``, the forecast detector): per series,
#: the candidate with the best rolling backtest so far (detectors/forecast_select.py).
DEFAULT_FORECASTER = SelectingForecaster.name


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
