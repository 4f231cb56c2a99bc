"""Hostile scenarios: what a scenario can make a replay cost is bounded, and numbers no replay can
use (NaN, infinities, years no date can hold) or files that are not files are located errors,
before anything runs."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from agent.yamlloc import YamlValidationError
from simulations.scenario import (
    MAX_FAULTS,
    MAX_PODS,
    MAX_SAMPLES,
    MAX_SERVICES,
    MAX_STEPS,
    SERIES_PER_MODEL,
    SERIES_PER_SERVICE,
    load_scenario,
    parse_scenario,
)
from simulations.workload import MODEL_METRICS, SERVICE_METRICS, TIMEOUT_SECONDS, latency

HEAD = """\
apiVersion: aiops/v1
kind: Scenario
metadata: {name: s}
spec:
"""


DEFAULTS = {"duration": "30m", "step": "15", "warmup": "1h"}


def scenario(
    duration: str = "30m",
    step: str = "15",
    warmup: str = "1h",
    services: list[str] | None = None,
    faults: list[str] | None = None,
    extra: str = "",
) -> str:
    lines = [f"  duration: {duration}", f"  step: {step}", f"  warmup: {warmup}", "  services:"]
    lines += [f"    - {s}" for s in services or ["{name: web, traffic: {base: 100}}"]]
    if faults:
        lines += ["  faults:", *(f"    - {f}" for f in faults)]
    return HEAD + "\n".join(lines) + "\n" + extra


def errors_of(text: str, base: Path | None = None) -> list[str]:
    with pytest.raises(YamlValidationError) as info:
        parse_scenario(text, "s.yaml", base=base)
    return [str(e) for e in info.value.errors]


def one_error(text: str, base: Path | None = None) -> str:
    (error,) = errors_of(text, base)
    return error


def traced(tmp_path: Path, csv: str, trace: str = "{file: t.csv}") -> str:
    """The error of a scenario whose one service replays ``csv`` (written as t.csv)."""
    (tmp_path / "t.csv").write_text(csv)
    return one_error(scenario(services=[f"{{name: web, traffic: {{trace: {trace}}}}}"]), tmp_path)


def per_minute(rows: int, value: str = "100") -> str:
    return "t,v\n" + "".join(f"{60 * i},{value}\n" for i in range(rows))


# ---------------------------------------------------------------- the work a scenario causes


def test_a_step_under_a_second_is_refused() -> None:
    assert parse_scenario(scenario(step="1"), "s.yaml").spec.step == 1.0
    assert one_error(scenario(step="0.000001")) == "s.yaml:6:9: spec.step: must be at least 1 s, got 1e-06 s"
    assert one_error(scenario(step="1ms")) == "s.yaml:6:9: spec.step: must be at least 1 s, got 0.001 s"


def test_a_run_and_warm_up_over_90_days_are_refused() -> None:
    assert parse_scenario(scenario(duration="80d", warmup="10d"), "s.yaml").spec.duration == 80 * 86400
    assert one_error(scenario(duration="1000d")) == (
        "s.yaml:5:13: spec.duration: the duration (1000 days) and warm-up (0.04167 days) add up to "
        "1000 days; at most 90 days can be simulated"
    )
    error = one_error(scenario(duration="1d", warmup="90d"))
    assert error.startswith("s.yaml:7:11: spec.warmup: the duration (1 days) and warm-up (90 days) add up")


def test_more_steps_than_the_bound_are_refused() -> None:
    """A minute after four weeks of warm-up at 1 s ran for ever: 2.4 million steps."""
    assert parse_scenario(scenario(duration="1m", step="1", warmup="23d"), "s.yaml").spec.warmup == 23 * 86400
    assert one_error(scenario(duration="1m", step="1", warmup="4w")) == (
        f"s.yaml:6:9: spec.step: the duration and warm-up are 2419260 steps of 1 s; at most {MAX_STEPS} can "
        "be simulated (a longer step or a shorter duration or warm-up)"
    )


def test_more_samples_than_the_bound_are_refused() -> None:
    """Services times series times steps: 60 services are fine for a few days, not for nine."""
    assert (len(SERVICE_METRICS), len(MODEL_METRICS)) == (SERIES_PER_SERVICE, SERIES_PER_MODEL)
    services = [f"{{name: s{i}}}" for i in range(60)]
    assert len(parse_scenario(scenario("2d", services=services), "s.yaml").spec.services) == 60
    error = one_error(scenario("9d", services=services))
    assert error == (
        "s.yaml:9:5: spec.services: 60 services with 480 series over 52080 steps (duration and warm-up) are "
        f"24998400 samples; at most {MAX_SAMPLES} can be simulated"
    )


def test_more_services_than_the_bound_are_refused_before_any_is_validated() -> None:
    services = [f"{{name: s{i}, maxReplicas: 3}}" for i in range(MAX_SERVICES)]
    assert len(parse_scenario(scenario("1m", warmup="0s", services=services), "s.yaml").spec.services) == 1000
    error = one_error(scenario("1m", warmup="0s", services=[*services, "{name: 'NOT A NAME'}"]))
    assert error == "s.yaml:9:5: spec.services: Value error, at most 1000 services can be simulated, got 1001"


def test_more_pods_than_the_bound_are_refused_where_the_sum_passes_it() -> None:
    services = ["{name: a, replicas: 500, maxReplicas: 19600}", "{name: b, replicas: 500, maxReplicas: 10}"]
    assert one_error(scenario(services=services)) == (
        "s.yaml:10:27: spec.services[1].replicas: the services up to this one can run 20100 pods (replicas "
        f"or maxReplicas if more, summed); at most {MAX_PODS} can be simulated"
    )
    error = one_error(scenario(services=["{name: web, maxReplicas: 100000000}"]))
    assert error.startswith("s.yaml:9:32: spec.services[0].maxReplicas: the services up to this one can run")


def test_more_pod_steps_than_the_bound_are_refused() -> None:
    services = ["{name: web, maxReplicas: 20000}"]
    assert parse_scenario(scenario("40h", services=services), "s.yaml").spec.duration == 40 * 3600
    assert one_error(scenario("42h", services=services)) == (
        "s.yaml:5:13: spec.duration: the services can run 20000 pods (replicas or maxReplicas if more, "
        "summed) for 10080 steps: 201600000 pod-steps; at most 200000000 can be simulated"
    )


def surges(n: int, every: str = "2h") -> list[str]:
    hours = int(every.removesuffix("h"))
    return [f"{{type: surge, service: web, at: {hours * k}h, factor: 2, hold: 1h}}" for k in range(n)]


def test_more_faults_than_the_bound_are_refused() -> None:
    text = scenario("89d", warmup="0s", faults=surges(MAX_FAULTS))
    assert len(parse_scenario(text, "s.yaml").spec.faults) == MAX_FAULTS
    error = one_error(scenario("89d", warmup="0s", faults=surges(MAX_FAULTS + 1)))
    assert error == "s.yaml:11:5: spec.faults: Value error, at most 1000 faults can be simulated, got 1001"


def test_a_surge_listed_after_one_it_starts_inside_overlaps_it_whatever_the_order() -> None:
    """Sorted by start (n log n): the later-starting surge overlaps, also when listed first."""
    faults = [
        "{type: surge, service: web, at: 2h, factor: 2}",
        "{type: surge, service: web, at: 1h, factor: 2, hold: 3h}",
        "{type: surge, service: web, at: 3h, factor: 2}",
    ]
    assert errors_of(scenario("6h", faults=faults)) == [
        "s.yaml:11:39: spec.faults[0].at: overlaps faults[1]: one surge at a time",
        "s.yaml:13:39: spec.faults[2].at: overlaps faults[1]: one surge at a time",
    ]


def test_a_service_offered_more_than_the_bound_is_refused() -> None:
    """The peak is the base at its daily peak and growth's end, times the surges that coincide."""
    daily = [
        f"{{type: surge, service: web, at: {h}h, factor: 30, hold: 30m, fall: 10m, daily: true}}"
        for h in range(24)
    ]
    assert len(parse_scenario(scenario("2d", faults=daily), "s.yaml").spec.faults) == 24
    error = one_error(scenario("2d", faults=[*daily, "{type: surge, service: web, at: 30h, factor: 1e300}"]))
    assert error == (
        "s.yaml:9:28: spec.services[0].traffic: offers up to 3.9e+303 requests/s (base, daily cycle and "
        "growth times the surges in effect together); at most 1e+07 can be simulated"
    )
    error = one_error(scenario("80d", services=["{name: web, traffic: {base: 1000, growth: 10}}"]))
    assert error.startswith("s.yaml:9:28: spec.services[0].traffic: offers up to 2.496e+07 requests/s")
    error = one_error(scenario(services=["{name: web, traffic: {base: 1e300}}"]))
    assert error.startswith(
        "s.yaml:9:35: spec.services[0].traffic.base: Input should be less than or equal to"
    )


def test_model_predictions_are_bounded() -> None:
    error = one_error(
        scenario(services=["{name: web, model: {name: m, predictions: 100000000000000000000}}"])
    )
    assert error.startswith(
        "s.yaml:9:49: spec.services[0].model.predictions: Input should be less than or equal"
    )


def test_latency_of_a_service_offered_far_more_than_it_serves_is_a_timeout() -> None:
    """utilisation ** 8 overflowed a float for a tiny capacityPerPod."""
    assert latency(0.04, 1e300) == (TIMEOUT_SECONDS, TIMEOUT_SECONDS)


# ---------------------------------------------------------------- numbers no replay can use


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "duration",
            ".inf",
            "s.yaml:5:13: spec.duration: Value error, a duration must be a finite number of seconds, got inf",
        ),
        (
            "duration",
            ".nan",
            "s.yaml:5:13: spec.duration: Value error, a duration must be a finite number of seconds, got nan",
        ),
        (
            "duration",
            '"' + "9" * 400 + 'w"',
            "s.yaml:5:13: spec.duration: Value error, expected a duration like 30s, 5m, 1h30m or a number "
            "of seconds, at most 64 characters, got '9999999999999999999999999999999999999999'... (401 "
            "characters)",
        ),
        (
            "step",
            ".nan",
            "s.yaml:6:9: spec.step: Value error, a duration must be a finite number of seconds, got nan",
        ),
        (
            "warmup",
            ".inf",
            "s.yaml:7:11: spec.warmup: Value error, a duration must be a finite number of seconds, got inf",
        ),
        (
            "warmup",
            ".nan",
            "s.yaml:7:11: spec.warmup: Value error, a duration must be a finite number of seconds, got nan",
        ),
        (
            "warmup",
            "100000000000",
            "s.yaml:7:11: spec.warmup: Value error, a duration cannot exceed 3.1536e+08 seconds (3650d), "
            "got 100000000000",
        ),
    ],
)
def test_non_finite_and_huge_durations_are_located(field: str, value: str, message: str) -> None:
    text = scenario().replace(f"  {field}: {DEFAULTS[field]}\n", f"  {field}: {value}\n")
    assert one_error(text) == message


def test_a_surge_at_nan_is_located() -> None:
    error = one_error(scenario(faults=["{type: surge, service: web, at: .nan, factor: 2}"]))
    assert error == (
        "s.yaml:11:39: spec.faults[0].at: Value error, a duration must be a finite number of seconds, got nan"
    )


def test_the_start_and_its_warm_up_stay_in_1970_to_9000() -> None:
    error = one_error(scenario(extra='  start: "0001-01-01T00:00:00Z"\n'))
    assert error == (
        "s.yaml:10:10: spec.start: Value error, must be between 1970-01-01 and 9000-01-01, "
        "got '0001-01-01T00:00:00Z'"
    )
    error = one_error(scenario(extra='  start: "9999-12-31T23:00:00Z"\n'))
    assert error.startswith(
        "s.yaml:10:10: spec.start: Value error, must be between 1970-01-01 and 9000-01-01"
    )
    assert one_error(scenario(extra='  start: "1970-01-01T00:30:00Z"\n')) == (
        "s.yaml:7:11: spec.warmup: reaches back before 1970-01-01 from the start 1970-01-01T00:30:00Z"
    )


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        (
            "{file: t.csv, start: .inf}",
            "spec.services[0].traffic.trace.start: Value error, a duration must be a finite number",
        ),
        (
            "{file: t.csv, start: .nan}",
            "spec.services[0].traffic.trace.start: Value error, a duration must be a finite number",
        ),
        (
            "{file: t.csv, scale: .inf}",
            "spec.services[0].traffic.trace.scale: Input should be a finite number",
        ),
        (
            "{file: t.csv, scale: 1e10}",
            "spec.services[0].traffic.trace.scale: Input should be less than or equal to 1000000",
        ),
    ],
)
def test_non_finite_trace_start_and_scale_are_located(tmp_path: Path, trace: str, message: str) -> None:
    assert message in traced(tmp_path, per_minute(120), trace)


def test_a_trace_value_scaled_past_the_bound_is_located(tmp_path: Path) -> None:
    error = traced(tmp_path, per_minute(120, "1e308"), "{file: t.csv, scale: 10}")
    assert error.endswith(
        "t.csv:2: value '1e308' times scale 10 is inf requests/s, "
        "more than the 1e+07 a service can be offered"
    )


def test_a_trace_named_with_a_nul_is_located(tmp_path: Path) -> None:
    error = one_error(scenario(services=['{name: web, traffic: {trace: {file: "a\\0b"}}}']), tmp_path)
    assert (
        error
        == "s.yaml:9:36: spec.services[0].traffic.trace: cannot read trace 'a\\x00b': embedded null byte"
    )


# ---------------------------------------------------------------- files that are not files


def test_a_trace_that_is_a_device_or_a_directory_is_refused_unread(tmp_path: Path) -> None:
    """/dev/zero never ends and says its size is 0; /dev/null stands for any device here."""
    for name, kind in [("/dev/null", "a character device"), (str(tmp_path), "a directory")]:
        error = one_error(
            scenario(services=[f"{{name: web, traffic: {{trace: {{file: {name}}}}}}}"]), tmp_path
        )
        assert error.endswith(f"cannot read trace {name!r}: {kind}, not a regular file")


def write(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):  # a reader that closes at once breaks the pipe
        path.write_text(text)


@pytest.mark.timeout(20)
def test_a_trace_or_scenario_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "t.csv"
    os.mkfifo(fifo)
    # a writer, so that a reader that opened it would get a valid trace and no error
    writer = threading.Thread(target=write, args=(fifo, per_minute(120)), daemon=True)
    writer.start()
    try:
        text = scenario(services=["{name: web, traffic: {trace: t.csv}}"])
        assert one_error(text, tmp_path).endswith("cannot read trace 't.csv': a FIFO, not a regular file")
        with pytest.raises(YamlValidationError) as info:
            load_scenario(fifo)
        assert [str(e) for e in info.value.errors] == [f"{fifo}:0:0: cannot read: a FIFO, not a regular file"]
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer finish
        writer.join(5)


def test_a_scenario_that_is_a_device_is_refused_unread() -> None:
    with pytest.raises(YamlValidationError) as info:
        load_scenario(Path("/dev/null"))
    assert [str(e) for e in info.value.errors] == [
        "/dev/null:0:0: cannot read: a character device, not a regular file"
    ]


# ---------------------------------------------------------------- trace rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "0,1\nnan,1\n",
            "t.csv:3: time 'nan' must be seconds or an ISO time between 1970-01-01 and 9000-01-01",
        ),
        ("0,1\ninf,1\n", "t.csv:3: time 'inf' must be seconds"),
        ("-1e308,1\n0,1\n1e308,1\n", "t.csv:2: time '-1e308' must be seconds"),
        ("0,1\n1e308,1\n", "t.csv:3: time '1e308' must be seconds"),
        ("0001-01-01,1\n9999-12-31,1\n", "t.csv:2: time '0001-01-01' must be seconds"),
    ],
)
def test_trace_times_must_be_finite_and_in_1970_to_9000(tmp_path: Path, rows: str, message: str) -> None:
    assert message in traced(tmp_path, "t,v\n" + rows)


def test_a_trace_quoted_in_an_error_is_cut_short(tmp_path: Path) -> None:
    error = traced(tmp_path, "t,v\n0,1\n60," + "x" * 10_000 + "\n")
    assert error.endswith(
        "t.csv:3: expected time,value (seconds or an ISO time, then a number), got "
        + ("['60', '" + "x" * 69 + "...")
    )
    error = traced(tmp_path, "t,v\n0," + "9" * 10_000 + "\n")
    assert error.endswith("t.csv:2: a value must be a finite number >= 0, got '" + "9" * 76 + "...")


def test_rows_far_closer_than_the_span_they_miss_are_counted_without_overflow(tmp_path: Path) -> None:
    """Rows 5e-324 s apart are a trace of nothing: 'inf rows' missing once crashed math.ceil."""
    error = traced(tmp_path, "t,v\n0,1\n5e-324,1\n1e-323,1\n")
    assert error.endswith("the run needs 0..1800 s: more than 10^15 rows missing after its last row")
