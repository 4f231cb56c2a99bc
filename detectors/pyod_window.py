"""PyOD models on windowed features per series, refit periodically on a recent window.

Each sample becomes a small feature vector from its own series only: the last ``lags`` values
standardised by the series' exponentially weighted mean and spread, the latest difference, and
the residual from a learned daily profile (:class:`~detectors.seasonal.SeasonalComponent`). The
standardisation makes the vectors of different series comparable, so one PyOD model (chosen by
name: IForest, ECOD, COPOD, HBOS, LODA) is fitted on a ring buffer of the ``window`` most recent
vectors of all series and refit every ``refit_every`` samples; the model's score is then
calibrated per series (:class:`~detectors.calibration.TailCalibrator`). Flagged samples never
enter the training buffer, and the per-series statistics learn flagged values clipped.

Scoring calls the model once per stretch of samples between refits, not once per sample, so a
long single series is as cheap per sample as a wide batch. The model is refit from the saved
training buffer after :meth:`~PyodWindowDetector.load_state` (the fits are seeded), so a
checkpoint never unpickles code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from detectors.base import DetectorError
from detectors.batch import FloatArray, IdArray, SampleBatch
from detectors.calibration import CALIBRATION_DEFAULTS, TailCalibrator, check_calibration, episode_stage
from detectors.robust import spread_floor
from detectors.seasonal import SEASONAL_DEFAULTS, seasonal_component
from detectors.streaming import (
    ArraySpec,
    StreamingDetector,
    check_int,
    finish_scores,
    merge_params,
    p_to_score,
    score_to_p,
)


def _build_model(name: str, seed: int) -> Any:
    # Imported here: PyOD pulls in numba and scikit-learn, which the streaming detectors never need.
    if name == "IForest":
        from pyod.models.iforest import IForest  # noqa: PLC0415

        return IForest(n_estimators=50, max_samples="auto", random_state=seed)
    if name == "ECOD":
        from pyod.models.ecod import ECOD  # noqa: PLC0415

        return ECOD()
    if name == "COPOD":
        from pyod.models.copod import COPOD  # noqa: PLC0415

        return COPOD()
    if name == "HBOS":
        from pyod.models.hbos import HBOS  # noqa: PLC0415

        return HBOS(n_bins=20)
    if name == "LODA":
        from pyod.models.loda import LODA  # noqa: PLC0415

        return LODA(n_random_cuts=100, random_state=seed)
    msg = f"unknown PyOD model {name!r}"
    raise DetectorError(msg)


#: The PyOD models by name, each built with its fixed settings and the detector's seed.
MODELS: dict[str, Callable[[int], Any]] = {
    name: functools.partial(_build_model, name) for name in ("IForest", "ECOD", "COPOD", "HBOS", "LODA")
}

PYOD_DEFAULTS: dict[str, Any] = {
    "model": "IForest",
    "lags": 4,
    "window": 2048,
    "refit_every": 4096,
    "min_fit": 256,
    "seed": 0,
    "bins": 24,
    **CALIBRATION_DEFAULTS,
}

_CLIP = 8.0  # standardised features are clipped to this many spreads


class PyodWindowDetector(StreamingDetector):
    """A PyOD model over per-series windowed features, calibrated per series.

    Parameters: ``model`` (IForest, ECOD, COPOD, HBOS or LODA), ``lags`` (recent values per
    vector, 4), ``window`` (training vectors kept, 2048), ``refit_every`` (samples between
    refits, 4096; the first fit happens once ``min_fit`` vectors, 256, are buffered), ``seed``
    (0), ``bins`` (of the daily profile, 24), and the calibration parameters of
    :data:`~detectors.calibration.CALIBRATION_DEFAULTS`.
    """

    #: Scores are ``-log10(p) / 10`` of a tail probability: the bank puts ``p_value`` on signals.
    scores_are_tail_p = True

    kind = "pyod"

    def __init__(self, params: Mapping[str, Any], name: str | None = None) -> None:
        where = name or self.kind
        p = merge_params(where, PYOD_DEFAULTS, params)
        if p["model"] not in MODELS:
            msg = f"{where}.model: unknown PyOD model {p['model']!r}; expected one of {sorted(MODELS)}"
            raise DetectorError(msg)
        self.lags = check_int(where, "lags", p["lags"], low=1, high=64)
        self.window = check_int(where, "window", p["window"], low=16, high=1_000_000)
        self.refit_every = check_int(where, "refit_every", p["refit_every"], low=1)
        self.min_fit = check_int(where, "min_fit", p["min_fit"], low=8, high=self.window)
        self.seed = check_int(where, "seed", p["seed"], low=0, high=2**32 - 1)
        calibration = check_calibration(where, p)
        self.seasonal = seasonal_component(
            where, {**SEASONAL_DEFAULTS, "bins": p["bins"]}, prefix="seasonal_"
        )
        self.calibrator = TailCalibrator(
            "model_",
            tail=float(calibration["tail"]),
            rate=float(calibration["calibration_rate"]),
            prior_q=2.0,
            prior_e=1.0,
            warmup=int(calibration["warmup"]),
        )
        self.flag_p = score_to_p(float(calibration["flag_score"]))
        self.episodes = episode_stage(calibration)
        self._params = p
        self.n_features = self.lags + 2
        super().__init__(name)
        self.seasonal.bind(self.state)
        self.calibrator.bind(self.state)
        self.episodes.bind(self.state)
        self._train = np.zeros((self.window, self.n_features), dtype=np.float32)
        self._train_n = 0  # vectors ever added; the ring position is _train_n % window
        self._since_fit = 0
        self._model: Any = None
        self._fit_x: np.ndarray[Any, np.dtype[np.float32]] | None = None
        self._ref = (0.0, 1.0)  # median and spread of the model's training scores
        self.fits = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PyodWindowDetector:
        """Build from parameters; errors name the parameter."""
        return cls(params)

    def array_specs(self) -> list[ArraySpec]:
        """Recent values, EW mean / variance, the daily profile and the calibrator."""
        return [
            ArraySpec("recent", np.float32, np.nan, self.lags),
            ArraySpec("mean", np.float64, 0.0),
            ArraySpec("var", np.float64, 0.0),
            ArraySpec("n", np.float32, 0.0),
            *self.seasonal.array_specs(),
            *self.calibrator.array_specs(),
            *self.episodes.array_specs(),
        ]

    def params(self) -> dict[str, Any]:
        """The parameters the detector was built with, defaults filled in."""
        return dict(self._params)

    def step(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        """Unused: :meth:`update` batches the model calls."""
        raise NotImplementedError

    # -- features ---------------------------------------------------------------------------

    def _features(self, ids: IdArray, ts: FloatArray, values: FloatArray) -> FloatArray:
        s = self.state
        mean = s["mean"][ids]
        var = s["var"][ids].astype(np.float64)
        n = s["n"][ids].astype(np.float64)
        floor = spread_floor(mean)
        sd = np.sqrt(var + floor * floor)
        recent = s["recent"][ids].astype(np.float64)  # newest first
        z_now = np.clip((values - mean) / sd, -_CLIP, _CLIP)
        z_old = np.nan_to_num(np.clip((recent - mean[:, None]) / sd[:, None], -_CLIP, _CLIP))
        diff = np.clip(z_now - z_old[:, 0], -_CLIP, _CLIP)
        seasonal_raw = self.seasonal.raw(ids, ts, values)
        seasonal_z = np.clip(seasonal_raw, 0.0, _CLIP) * np.sign(self.seasonal.last_residual)
        feats = np.empty((ids.size, self.n_features), dtype=np.float64)
        feats[:, 0] = z_now
        feats[:, 1 : self.lags] = z_old[:, : self.lags - 1]
        feats[:, self.lags] = diff
        feats[:, self.lags + 1] = seasonal_z
        feats[n < 2] = 0.0
        # learn the per-series statistics (a far-out value is learned clipped)
        a = np.maximum(0.02, 1.0 / (n + 1.0))
        r = np.clip(values - mean, -4.0 * sd, 4.0 * sd)
        r = np.where(n >= 2, r, values - mean)
        s["mean"][ids] = mean + a * r
        s["var"][ids] = (1.0 - a) * (var + a * r * r)
        s["n"][ids] = n + 1.0
        rec = s["recent"]
        rec[ids, 1:] = rec[ids, :-1]
        rec[ids, 0] = values
        self.seasonal.learn(ids, ts, values, np.abs(seasonal_raw) > 6.0)
        return feats

    # -- the model --------------------------------------------------------------------------

    def _refit(self) -> None:
        rows = min(self._train_n, self.window)
        if rows >= self.min_fit:
            self._fit(self._train[:rows].copy())

    def _fit(self, x32: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        model = MODELS[self._params["model"]](self.seed)
        model.fit(x32.astype(np.float64))
        train_scores = np.asarray(model.decision_scores_, dtype=np.float64)
        med = float(np.median(train_scores))
        spread = float(np.quantile(train_scores, 0.9) - med)
        self._ref = (med, spread if spread > 1e-12 else 1.0)
        self._model = model
        self._fit_x = x32
        self.fits += 1

    def _score(
        self, chunk: list[tuple[IdArray, IdArray, FloatArray, FloatArray]], scores: FloatArray
    ) -> None:
        if not chunk:
            return
        x = np.vstack([f for _, _, _, f in chunk])
        if self._model is None:
            raw = np.zeros(x.shape[0])
        else:
            med, spread = self._ref
            raw = np.maximum(
                (np.asarray(self._model.decision_function(x), dtype=np.float64) - med) / spread, 0.0
            )
        raw = np.nan_to_num(raw, nan=0.0, posinf=1e6)
        start = 0
        for idx, ids, ts, feats in chunk:
            r = raw[start : start + idx.size]
            start += idx.size
            p = self.calibrator.p_value(ids, r)
            flagged = p <= self.flag_p
            self.calibrator.learn(ids, r, flagged, self.flag_p)
            scores[idx] = self.episodes.apply(ids, ts, p_to_score(p))
            self._remember(feats[~flagged])

    def _remember(self, feats: FloatArray) -> None:
        k = feats.shape[0]
        if k == 0:
            return
        if k > self.window:
            feats = feats[-self.window :]
            self._train_n += k - self.window
            k = self.window
        pos = (self._train_n + np.arange(k)) % self.window
        self._train[pos] = feats
        self._train_n += k

    def update(self, batch: SampleBatch) -> FloatArray:
        """Score each sample in ``[0, 1]`` (batch order); refit at the scheduled sample counts."""
        scores = np.zeros(len(batch), dtype=np.float64)
        chunk: list[tuple[IdArray, IdArray, FloatArray, FloatArray]] = []
        for idx, ids, ts, values in self.accepted_rounds(batch):
            chunk.append((idx, ids, ts, self._features(ids, ts, values)))
            self._since_fit += idx.size
            due = self._since_fit >= self.refit_every
            first = self._model is None and self._train_n + sum(c[0].size for c in chunk) >= self.min_fit
            if due or first:
                self._score(chunk, scores)
                chunk = []
                if due or (self._model is None and self._train_n >= self.min_fit):
                    self._refit()
                    self._since_fit = 0
        self._score(chunk, scores)
        return finish_scores(scores)

    # -- state ------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """The training buffer, the refit schedule and the vectors of the last fit."""
        return {
            "train": self._train.copy(),
            "train_n": self._train_n,
            "since_fit": self._since_fit,
            "fit_x": None if self._fit_x is None else self._fit_x.copy(),
        }

    def load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore the training buffer and refit the model on the vectors it was fitted on."""
        train = np.asarray(extra.get("train", self._train), dtype=np.float32)
        if train.shape != self._train.shape:
            msg = f"{self.name}: training buffer has shape {train.shape}, expected {self._train.shape}"
            raise DetectorError(msg)
        self._train = train.copy()
        self._train_n = int(extra.get("train_n", 0))
        self._since_fit = int(extra.get("since_fit", 0))
        self._model = None
        self._fit_x = None
        fit_x = extra.get("fit_x")
        if fit_x is not None:
            x = np.asarray(fit_x, dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != self.n_features:
                msg = f"{self.name}: fitted vectors have shape {x.shape}, expected (n, {self.n_features})"
                raise DetectorError(msg)
            self._fit(x.copy())
            self.fits -= 1
