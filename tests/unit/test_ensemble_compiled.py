"""The default ensemble's compiled loop: the numpy path's state and scores, and any chunking."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import SampleBatch
from detectors.calibration import CalibratedDetector
from detectors.ensemble import EnsembleDetector
from detectors.registry import build_learned


def ensemble(params: dict[str, Any] | None = None) -> EnsembleDetector:
    det = build_learned("ensemble", params or {})
    assert isinstance(det, EnsembleDetector)
    return det


def operations_like(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Five-minute samples: a daily cycle, noise, a spike, a level shift, a flat stretch, a range
    that keeps growing (so novelty's lattice coarsens), a NaN, a repeated timestamp."""
    rng = np.random.default_rng(seed)
    ts = 1.6e9 + 300.0 * np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * ts / 86_400) + rng.standard_normal(n)
    values[n // 3] += 80
    values[n // 2 :] += 25
    values[n // 4 : n // 4 + 40] = 50.0
    values[2 * n // 3 :] *= np.linspace(1, 40, n - 2 * n // 3)
    values[n // 5] = np.nan
    ts[n // 6] = ts[n // 6 - 1]
    return ts, values


def test_the_compiled_loop_keeps_the_numpy_paths_state_and_scores() -> None:
    """Two series interleaved, in batches of 97 rows: every state array equal bit for bit, scores
    to 1e-12 (numba's log10 may round the last bit differently from numpy's)."""
    ts_a, v_a = operations_like(1500, 1)
    ts_b, v_b = operations_like(1500, 2)
    ids = np.tile([0, 1], 1500)
    ts = np.column_stack([ts_a, ts_b + 7.0]).ravel()
    values = np.column_stack([v_a, v_b]).ravel()
    compiled, reference = ensemble(), ensemble()
    assert compiled._compiled is not None  # the path under test is the compiled one
    got, want = [], []
    for start in range(0, ids.size, 97):
        batch = SampleBatch.from_arrays(
            ids[start : start + 97], ts[start : start + 97], values[start : start + 97]
        )
        got.append(compiled.update(batch))
        want.append(CalibratedDetector.update(reference, batch))
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=0, atol=1e-12)
    assert np.concatenate(want).max() > 0.3  # something was flagged: the comparison covers it
    for name, array in reference.state.arrays.items():
        np.testing.assert_array_equal(compiled.state.arrays[name], array, err_msg=name)
    assert (
        (compiled.invalid, compiled.duplicates, compiled.out_of_order)
        == (
            reference.invalid,
            reference.duplicates,
            reference.out_of_order,
        )
        == (2, 2, 0)
    )


def test_other_component_sets_run_round_by_round() -> None:
    assert ensemble({"components": ["seasonal", "cusum", "burst"]})._compiled is None
    assert ensemble({"seasonal": {"weekly": True}})._compiled is None
    assert ensemble({"weights": {"novelty": 3.0}})._compiled is not None


TS, VALUES = operations_like(700, 3)


def _one_at_a_time() -> np.ndarray[Any, Any]:
    det = ensemble()
    return np.concatenate(
        [det.update(SampleBatch.from_arrays([0], TS[i : i + 1], VALUES[i : i + 1])) for i in range(TS.size)]
    )


ONE_AT_A_TIME = _one_at_a_time()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40))
def test_any_chunking_gives_the_scores_of_one_sample_at_a_time(sizes: list[int]) -> None:
    det = ensemble()
    bounds = np.minimum(np.cumsum([0, *sizes]), TS.size)
    parts = [
        det.update(SampleBatch.from_arrays(np.zeros(b - a, dtype=np.int64), TS[a:b], VALUES[a:b]))
        for a, b in itertools.pairwise(bounds)
    ]
    rest = det.update(
        SampleBatch.from_arrays(
            np.zeros(TS.size - bounds[-1], dtype=np.int64), TS[bounds[-1] :], VALUES[bounds[-1] :]
        )
    )
    np.testing.assert_array_equal(np.concatenate([*parts, rest]), ONE_AT_A_TIME)
    assert ONE_AT_A_TIME.max() > 0.3


def _fresh_process(setup: str) -> dict[str, Any]:
    """Run the default ensemble over one batch in a new interpreter after ``setup``; what it
    loaded of scipy, and whether sklearn (which links scipy's BLAS) still imports afterwards."""
    script = (
        "import json, sys, threading\n"
        f"{setup}\n"
        "from detectors import SampleBatch\n"
        "from detectors.registry import build_learned\n"
        "build_learned('ensemble', {}).update(SampleBatch.from_arrays([0, 0], [0.0, 60.0], [1.0, 2.0]))\n"
        "seen = {m: m in sys.modules for m in ('scipy.linalg', 'scipy.linalg.cython_blas')}\n"
        "import sklearn.linear_model, scipy.linalg.cython_blas\n"
        "from numba.np import arraymath\n"
        "print(json.dumps({'seen': seen, 'blas': arraymath._HAVE_BLAS}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=110
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_first_call_does_not_import_scipy_linalg_and_leaves_it_importable() -> None:
    result = _fresh_process("")
    assert result["seen"] == {"scipy.linalg": False, "scipy.linalg.cython_blas": False}
    assert result["blas"] is False  # numba's compiled np.correlate/np.convolve: its own loop


def test_with_another_thread_or_scipy_loaded_numba_probes_blas_as_usual() -> None:
    threaded = _fresh_process(
        "stop = threading.Event(); threading.Thread(target=stop.wait, daemon=True).start()"
    )
    assert threaded["seen"]["scipy.linalg"] is True
    assert threaded["blas"] is True
    loaded = _fresh_process("import scipy.linalg")
    assert loaded["blas"] is True
