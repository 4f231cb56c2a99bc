"""The default detector: several streaming components, calibrated per series, combined.

Each component sees every sample of a series and gives a tail probability: the residual
components (``seasonal``: a spike or a value wrong for its time of day, from a daily profile in 48
half-hour bins; ``cusum``: a small sustained shift; ``burst``: a series turning erratic; ``ewma``,
a spike against the recent level, can be added) through their own per-series
:class:`~detectors.calibration.TailCalibrator`, ``novelty`` (a value, or a recent level, where the
series has never been) from its own probability model. The ensemble's probability is a weighted
Bonferroni bound, ``min_i p_i * W / w_i`` with ``W`` the sum of the weights ``w_i`` (equal
weights: the smallest p times the number of components), reported as ``-log10(p) / 10``. What a
component may not learn as normal is decided with equal shares (the smallest p times the number
of components against ``flag_score``), so the weights change what is reported, not what is learned.

The weights share out the false-alarm budget. By default novelty holds nearly all of it
(``{"novelty": 10000}`` against 1 for each residual component): on nab-dev, outside the labeled
windows, the residual components' probabilities are about as small as they say (p <= 0.01 on
0.4 - 1 % of the samples), but what they flag there is mostly not what was labeled; novelty's
(p <= 0.01 on 0.02 %) mostly is. So the residual components speak only on extreme evidence, where
they still report an incident for as long as it lasts, after novelty reported its first sample.
The in-cluster configuration runs this same detector with a higher bar
(:data:`~detectors.registry.ALARM_SCORE`), where only the residual components can speak.

Parameters: ``components`` (names, default ``["seasonal", "cusum", "burst", "novelty"]``, any of
``ewma``, ``seasonal``, ``cusum``, ``burst``, ``novelty``), ``weights`` (a mapping of component
name to a positive weight, 1 for a component not named; default ``{"novelty": 10000}``), a mapping
per component of its own parameters (``{"seasonal": {"bins": 24}}``, see each family's defaults),
and the calibration parameters of :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from detectors.base import DetectorError
from detectors.batch import FloatArray, SampleBatch
from detectors.calibration import CALIBRATION_DEFAULTS, CalibratedDetector, Component
from detectors.changepoint import BURST_DEFAULTS, CUSUM_DEFAULTS, burst_component, cusum_component
from detectors.novelty import NOVELTY_DEFAULTS, novelty_component
from detectors.robust import EWMA_DEFAULTS, ewma_component
from detectors.seasonal import SEASONAL_DEFAULTS, seasonal_component
from detectors.streaming import MAX_ABS_TIMESTAMP, MAX_ABS_VALUE, check_float, finish_scores, merge_params


def _own(defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in defaults.items() if k not in CALIBRATION_DEFAULTS}


#: Each component's own parameters inside the ensemble, and how to build it.
_COMPONENTS: dict[str, tuple[dict[str, Any], Callable[[str, Mapping[str, Any]], Component]]] = {
    "ewma": ({**_own(EWMA_DEFAULTS), "alpha": 0.01}, ewma_component),
    "seasonal": ({**_own(SEASONAL_DEFAULTS), "bins": 48}, seasonal_component),
    "cusum": (_own(CUSUM_DEFAULTS), cusum_component),
    "burst": (_own(BURST_DEFAULTS), burst_component),
    "novelty": (_own(NOVELTY_DEFAULTS), novelty_component),
}

ENSEMBLE_DEFAULTS: dict[str, Any] = {
    "components": ["seasonal", "cusum", "burst", "novelty"],
    "weights": {"novelty": 10000.0},
    **{name: {} for name in _COMPONENTS},
    **CALIBRATION_DEFAULTS,
}

#: The parameter candidates ``aiops nab`` cross-validates (leave one NAB category out), the
#: defaults first: novelty's range learned over 6 hours instead of a day, the share of the
#: false-alarm budget novelty holds, novelty alone, and its lattice's resolution. A candidate
#: replaces the default only if it wins on the folds (see docs/evaluation.md, "Detectors").
ENSEMBLE_CV_GRID: tuple[dict[str, Any], ...] = (
    {},
    {"novelty": {"range_hours": 6.0}},
    {"weights": {"novelty": 100.0}},
    {"weights": {"novelty": 1.0}},
    {"components": ["novelty"]},
    {"novelty": {"levels": 4}},
    {"novelty": {"levels": 16}},
)


class EnsembleDetector(CalibratedDetector):
    """Components (seasonal, CUSUM, burst, novelty by default) combined by a weighted Bonferroni bound."""

    kind = "ensemble"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EnsembleDetector:
        """Build from parameters; errors name the parameter."""
        p = merge_params(cls.kind, ENSEMBLE_DEFAULTS, params)
        names = p["components"]
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)
        ):
            msg = f"{cls.kind}.components: expected a non-empty list of distinct names, got {names!r}"
            raise DetectorError(msg)
        unknown = sorted(set(names) - set(_COMPONENTS))
        if unknown:
            msg = (
                f"{cls.kind}.components: unknown component(s) {unknown}; "
                f"expected some of {sorted(_COMPONENTS)}"
            )
            raise DetectorError(msg)
        components: list[Component] = []
        resolved: dict[str, Any] = dict(p)
        for name, (defaults, build) in _COMPONENTS.items():
            own = p[name]
            if not isinstance(own, Mapping):
                msg = f"{cls.kind}.{name}: expected a mapping of parameters, got {own!r}"
                raise DetectorError(msg)
            merged = merge_params(f"{cls.kind}.{name}", defaults, own)
            resolved[name] = merged
            if name in names:
                components.append(build(f"{cls.kind}.{name}", merged))
        resolved["components"] = list(names)
        weights = p["weights"]
        if not isinstance(weights, Mapping) or not set(weights) <= set(_COMPONENTS):
            msg = (
                f"{cls.kind}.weights: expected a mapping of component names "
                f"(some of {sorted(_COMPONENTS)}) to weights, got {weights!r}"
            )
            raise DetectorError(msg)
        shares = [
            check_float(f"{cls.kind}.weights", n, weights.get(n, 1.0), low=0.0, low_open=True) for n in names
        ]
        return cls(components, resolved, weights=shares)

    def __init__(
        self,
        components: Sequence[Component],
        params: Mapping[str, Any],
        name: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(components, params, name, weights)
        # numba takes 0.2 s to import: only a process that builds an ensemble pays for it
        from detectors.ensemble_compiled import compiled_plan  # noqa: PLC0415

        self._compiled = compiled_plan(self)

    def update(self, batch: SampleBatch) -> FloatArray:
        """Score and learn ``batch``: through the compiled loop where the components are the
        default set (the same scores, any series length), else round by round."""
        plan = self._compiled
        if plan is None:
            return super().update(batch)
        n = len(batch)
        scores = np.zeros(n, dtype=np.float64)
        if n == 0:
            return scores
        if int(batch.series.min()) < 0:
            msg = f"{self.name}: batch holds unregistered series ids; drop them first"
            raise DetectorError(msg)
        size = int(batch.series.max()) + 1
        self.ensure(size)
        finite = (np.abs(batch.values) <= MAX_ABS_VALUE) & (np.abs(batch.timestamps) <= MAX_ABS_TIMESTAMP)
        n_ok = int(np.count_nonzero(finite))
        self.invalid += n - n_ok
        index = np.arange(n, dtype=np.int64) if n_ok == n else np.flatnonzero(finite).astype(np.int64)
        # series by series, each in timestamp order (stable: ties keep batch order); a batch
        # with each series at most once (the common case for many series) is taken as it is
        sids = batch.series[index]
        scratch = np.empty(size, dtype=np.int64)
        positions = np.arange(sids.size, dtype=np.int64)
        scratch[sids] = positions
        distinct = bool((scratch[sids] == positions).all())
        order = index if distinct else index[np.lexsort((batch.timestamps[index], sids))]
        counters = np.zeros(2, dtype=np.int64)
        plan.run(self.state, batch, order, scores, counters)
        self.duplicates += int(counters[0])
        self.out_of_order += int(counters[1])
        return finish_scores(scores)
