"""Signals on the wire: read back with errors naming the field, keyed by the target they act on."""

from __future__ import annotations

from typing import Any

import pytest

from agent.playbook.loader import load_sources
from agent.routing import target_key
from detectors import SeriesKey, Signal
from detectors.signal import SignalKind

PLAYBOOKS = [
    (
        "a.yaml",
        """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: b-restart}
spec:
  trigger: {signal: threshold, metric: error_ratio, match: {deployment: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions: [{restart: {}}]
""",
    ),
    (
        "b.yaml",
        """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: a-scale}
spec:
  trigger: {signal: threshold, metric: error_ratio, match: {service: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.service }}"}
  actions: [{scale: {by: 1}}]
""",
    ),
]


def _signal(metric: str = "error_ratio", **labels: str) -> Signal:
    return Signal(
        SignalKind.THRESHOLD, SeriesKey.of(metric, labels), 1.7e9, 0.9, 1.0, "threshold", {"rule": 0}
    )


def test_a_signal_round_trips_through_its_wire_form() -> None:
    signal = _signal(namespace="shop", deployment="web")
    assert Signal.from_dict(signal.to_dict()) == signal


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "panic"}, "'kind'"),
        ({"metric": ""}, "'metric'"),
        ({"labels": {"a": 1}}, "'labels'"),
        ({"timestamp": "soon"}, "'timestamp'"),
        ({"score": True}, "'score'"),
        ({"details": []}, "'details'"),
        ({"detector": None}, "'detector'"),
    ],
)
def test_a_malformed_signal_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Signal.from_dict({**_signal(namespace="shop").to_dict(), **change})


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Signal.from_dict([1, 2])


def test_signals_are_keyed_by_the_target_of_the_first_playbook_by_name_that_they_trigger() -> None:
    playbooks = load_sources(PLAYBOOKS)
    # both playbooks match; "a-scale" comes first by name and names the service's Deployment
    both = _signal(namespace="shop", deployment="web", service="api")
    assert target_key(playbooks, both) == b"Deployment/shop/api"
    # only b-restart matches: its target, whichever series of the target signalled
    assert target_key(playbooks, _signal(namespace="shop", deployment="web")) == b"Deployment/shop/web"
    assert (
        target_key(playbooks, _signal(namespace="shop", deployment="web", pod="web-1"))
        == b"Deployment/shop/web"
    )
    # no playbook: the series
    other = _signal("latency", namespace="shop")
    assert target_key(playbooks, other) == str(other.series).encode()
    # a target that cannot be rendered (no namespace label): the next playbook, else the series
    bad = _signal(deployment="web")
    assert target_key(playbooks, bad) == str(bad.series).encode()
