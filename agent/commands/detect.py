"""``aiops detect``: score a NAB-format CSV file with a detector, causally, as the daemon would.

The input is ``timestamp,value`` (timestamps like ``2014-04-01 00:00:00``, read as UTC unless they
carry an offset, or Unix seconds; a value left empty, or ``NA``, ``null`` and the like, is a
missing sample: scored 0, and the detector skips it). The rows are fed to the detector in order,
in batches of :data:`BATCH_ROWS`, as one series named ``value``; the output repeats every row
with its anomaly score: ``timestamp,value,anomaly_score``, written to a temporary file renamed over
the output once whole. The input must be a regular file of at most :data:`MAX_INPUT_BYTES` bytes
and :data:`MAX_INPUT_ROWS` rows. ``aiops nab`` scores its corpus through the same functions.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.files import open_regular
from detectors import DetectorError, SampleBatch, SeriesKey, SeriesRegistry, build_detector
from detectors.bank import DEFAULT_DETECTOR
from detectors.batch import FloatArray
from detectors.streaming import MAX_ABS_TIMESTAMP
from remediations.jsontext import loads as loads_json

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2

#: Rows per SampleBatch fed to the detector: the size of a modest batch from a source.
BATCH_ROWS = 1024

#: The series every input row belongs to; detector rules (``threshold``) match this metric name.
SERIES = SeriesKey.of("value")

HEADER = ("timestamp", "value")

#: The largest input file read (bytes). Checked before the file is read and again while it is
#: read (a file that grows), never reading past it. 128 MiB holds :data:`MAX_INPUT_ROWS` rows of
#: up to 53 bytes: an ISO timestamp and a value of 20 digits.
MAX_INPUT_BYTES = 128 << 20
#: The most data rows read: a year of 15-second samples is 2,102,400. A row costs about 240
#: bytes once read (its text, kept for the output, and its numbers), so this is some 600 MB.
MAX_INPUT_ROWS = 2_500_000


class InputError(Exception):
    """Input that cannot be used; the message names the file, and the line where there is one."""


@dataclass(frozen=True, slots=True)
class Series:
    """One input file: the timestamps as written, as Unix seconds, and the values."""

    path: Path
    stamps: list[str]
    raw_values: list[str]
    timestamps: FloatArray
    values: FloatArray

    def __len__(self) -> int:
        return len(self.stamps)


@dataclass(frozen=True, slots=True)
class Scored:
    """The anomaly score of every row, and how many raw scores had to be repaired."""

    scores: FloatArray
    non_finite: int
    clipped: int


#: Value cells read as a missing sample (case-insensitive), besides an empty cell: what pandas,
#: R and spreadsheet exports write for one.
MISSING = frozenset({"nan", "na", "n/a", "null", "none", "-"})


def parse_timestamp(text: str) -> float:
    """Unix seconds of an ISO 8601 timestamp (one without an offset is taken as UTC), or of a
    number: Unix seconds, or milliseconds when too large to be seconds (past the year 5000)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        number = float(text)  # ValueError when it is not a number either
        if not math.isfinite(number):
            raise ValueError(text) from None
        return number / 1000.0 if abs(number) > MAX_ABS_TIMESTAMP else number
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_value(text: str) -> float:
    """A value cell as a number; NaN for a missing sample (empty, or one of :data:`MISSING`)."""
    cell = text.strip()
    if not cell or cell.lower() in MISSING:
        return math.nan
    return float(cell)


def read_csv(
    path: Path, header: tuple[str, ...], *, extra_columns: bool = False
) -> list[tuple[int, list[str]]]:
    """The rows of a CSV file with ``header``, each with its line number; blank lines skipped.

    With ``extra_columns`` the header only has to start with ``header`` and rows may be longer.
    """
    return list(iter_csv(path, header, extra_columns=extra_columns))


def iter_csv(
    path: Path, header: tuple[str, ...], *, extra_columns: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """:func:`read_csv` one row at a time (a caller that keeps only the cells keeps no row lists:
    thousands of them would wake the garbage collector over every object the imports made).

    Only a regular file is read (a FIFO would hang, a device never end), of at most
    :data:`MAX_INPUT_BYTES` bytes and :data:`MAX_INPUT_ROWS` rows.
    """
    with open_input(path) as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
            if first is None:
                raise InputError(f"{path}: empty file, expected the header {','.join(header)}")
            found = tuple(cell.strip() for cell in first)
            if (found[: len(header)] if extra_columns else found) != header:
                raise InputError(
                    f"{path}:{reader.line_num}: expected the header {','.join(header)}, got {','.join(first)}"
                )
            rows = 0
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header) and not (extra_columns and len(row) > len(header)):
                    raise InputError(
                        f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}"
                    )
                rows += 1
                if rows > MAX_INPUT_ROWS:
                    raise InputError(
                        f"{path}:{reader.line_num}: more than {MAX_INPUT_ROWS} rows (MAX_INPUT_ROWS); "
                        "split the file"
                    )
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}:{reader.line_num}: {exc}") from exc


class _Capped(io.RawIOBase):
    """A file descriptor read to at most ``limit + 1`` bytes: past ``limit``, an :class:`InputError`."""

    def __init__(self, fd: int, path: Path, limit: int) -> None:
        self._file = io.FileIO(fd, "rb")
        self._path = path
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._file.readinto(view[: self._limit + 1 - self._read]) or 0
        self._read += n
        if self._read > self._limit:
            raise InputError(_too_large(self._path))
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _too_large(path: Path) -> str:
    limit = f"{MAX_INPUT_BYTES >> 20} MiB" if MAX_INPUT_BYTES % (1 << 20) == 0 else f"{MAX_INPUT_BYTES} bytes"
    return f"{path}: larger than {limit} (MAX_INPUT_BYTES); refused"


def open_input(path: Path) -> io.TextIOWrapper:
    """``path`` opened as UTF-8 text (a BOM skipped) if it is a regular file within
    :data:`MAX_INPUT_BYTES`; an :class:`InputError` naming it otherwise.

    Opened by :func:`agent.files.open_regular`: a FIFO or a device is refused, never waited on.
    """
    try:
        fd = open_regular(path)
    except OSError as exc:  # NotRegularFileError says what the path is instead
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        if os.fstat(fd).st_size > MAX_INPUT_BYTES:
            raise InputError(_too_large(path))
        raw = _Capped(fd, path, MAX_INPUT_BYTES)
    except BaseException:
        os.close(fd)
        raise
    return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="")


def read_series(path: Path) -> Series:
    """Read a ``timestamp,value`` file; an empty value is NaN, any other bad cell an error (the
    first bad line of the file is the one named)."""
    lines: list[int] = []
    stamps: list[str] = []
    raw_values: list[str] = []
    values: list[float] = []
    bad_value: InputError | None = None
    for line, (stamp, value) in iter_csv(path, HEADER):
        lines.append(line)
        stamps.append(stamp)
        raw_values.append(value)
        try:
            values.append(parse_value(value))
        except ValueError:
            bad_value = InputError(f"{path}:{line}: cannot parse the value {value!r} as a number")
            break
    timestamps = None if bad_value else parse_plain_timestamps(stamps)
    if timestamps is None:
        timestamps = np.empty(len(stamps))
        for i, (line, stamp) in enumerate(zip(lines, stamps, strict=True)):
            try:
                timestamps[i] = parse_timestamp(stamp)
            except ValueError:
                raise InputError(f"{path}:{line}: cannot parse the timestamp {stamp!r}") from None
    if bad_value is not None:
        raise bad_value
    return Series(path, stamps, raw_values, timestamps, np.array(values, dtype=np.float64))


#: A run of timestamps, one a line, that numpy's datetime64 parser reads exactly as
#: :func:`parse_timestamp` does: ISO 8601 date and time without an offset, to the second or the
#: microsecond (not the year 0, which numpy takes and Python refuses).
_PLAIN_ISO = re.compile(
    r"(?:(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?\n)*"
)

#: Microseconds from 1970 below which a float64 holds every count exactly (the years 1685 to
#: 2255), so that dividing by 1e6 rounds as Python's ``timedelta.total_seconds`` does.
_EXACT_MICROS = 2**53


def parse_plain_timestamps(stamps: list[str]) -> FloatArray | None:
    """Unix seconds of every stamp at once when all are plain ISO 8601 (see :data:`_PLAIN_ISO`),
    as :func:`parse_timestamp` gives them one by one; None when any is not (or is no date, like
    February 30): then each is parsed alone, and the bad one named."""
    if not _PLAIN_ISO.fullmatch("\n".join(stamps) + "\n" if stamps else ""):
        return None
    try:
        micros = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
    except ValueError:
        return None
    if micros.size and int(np.abs(micros).max()) >= _EXACT_MICROS:
        return None
    return micros / 1e6


def parse_params(text: str | None) -> dict[str, Any]:
    """The ``--params`` JSON object ({} when absent)."""
    if text is None:
        return {}
    try:
        params = loads_json(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--params: invalid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InputError(f"--params: expected a JSON object, got {type(params).__name__}")
    return params


def score_series(
    series: Series, detector: str, params: Mapping[str, Any], batch_rows: int = BATCH_ROWS
) -> Scored:
    """Run a fresh ``detector`` over ``series`` in order, ``batch_rows`` rows per batch.

    Scores the detector returns that are not finite become 0 and scores outside ``[0, 1]`` are
    clipped; :class:`Scored` counts both. Raises :class:`~detectors.DetectorError` when the
    detector rejects ``params`` or the data.
    """
    registry = SeriesRegistry()
    sid = registry.id_for(SERIES)
    model = build_detector(detector, params, registry)
    n = len(series)
    scores = np.empty(n)
    ids = np.full(min(n, batch_rows), sid, dtype=np.int64)
    for start in range(0, n, batch_rows):
        stop = min(start + batch_rows, n)
        batch = SampleBatch(ids[: stop - start], series.timestamps[start:stop], series.values[start:stop])
        out = np.asarray(model.update(batch), dtype=np.float64)
        if out.shape != (stop - start,):
            msg = f"{detector}: returned {out.shape} scores for a batch of {stop - start} samples"
            raise DetectorError(msg)
        scores[start:stop] = out
    finite = np.isfinite(scores)
    non_finite = int(n - np.count_nonzero(finite))
    scores[~finite] = 0.0
    outside = (scores < 0.0) | (scores > 1.0)
    clipped = int(np.count_nonzero(outside))
    np.clip(scores, 0.0, 1.0, out=scores)
    return Scored(scores, non_finite, clipped)


def write_scores(path: Path, series: Series, scores: FloatArray) -> None:
    """Write ``timestamp,value,anomaly_score`` rows atomically (see :func:`write_csv`)."""
    rows = zip(series.stamps, series.raw_values, map(repr, scores.tolist()), strict=True)
    write_csv(path, ("timestamp", "value", "anomaly_score"), rows)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write ``header`` and ``rows`` to ``path`` atomically: a temporary file beside it, renamed
    over it once whole. A failure (raised while writing, or by ``rows``) leaves ``path`` as it was."""
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            os.chmod(tmp, _output_mode(path))  # not mkstemp's 0600: the mode open() would give
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _output_mode(path: Path) -> int:
    """The permissions of the file ``path`` names, or those a new file gets under the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mask = os.umask(0o022)  # read by setting it: a command runs one thread
        os.umask(mask)
        return 0o666 & ~mask


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``aiops detect``."""
    p = subparsers.add_parser(
        "detect",
        help="score a timestamp,value CSV file with a detector",
        description=(
            "Score a NAB-format CSV file (timestamp,value) causally with a detector and write "
            "timestamp,value,anomaly_score. The rows form one series named 'value'."
        ),
    )
    p.add_argument("input", type=Path, metavar="INPUT.csv", help="timestamp,value rows, oldest first")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help=f"detector name (default {DEFAULT_DETECTOR})")
    p.add_argument("--params", metavar="JSON", help="detector parameters as a JSON object")
    p.add_argument("--output", type=Path, required=True, metavar="OUT.csv", help="where to write the scores")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Carry out ``aiops detect``; returns the exit code."""
    try:
        params = parse_params(args.params)
        series = read_series(args.input)
        scored = score_series(series, args.detector, params)
    except (InputError, DetectorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    report_repairs(args.input, scored)
    try:
        write_scores(args.output, series, scored.scores)
    except OSError as exc:
        print(f"error: {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.output}: {len(series)} rows scored by {args.detector}")
    return EXIT_OK


def report_repairs(path: Path, scored: Scored) -> None:
    """Say on stderr how many scores of ``path`` were replaced or clipped."""
    if scored.non_finite:
        print(f"warning: {path}: {scored.non_finite} non-finite scores replaced with 0", file=sys.stderr)
    if scored.clipped:
        print(f"warning: {path}: {scored.clipped} scores outside [0, 1] clipped", file=sys.stderr)
