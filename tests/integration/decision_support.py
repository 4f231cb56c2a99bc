"""What the decision-side integration tests share: a restart playbook on ``error_ratio`` and its series."""

from __future__ import annotations

from typing import Any

import yaml

from agent.playbook.loader import PlaybookSet, load_sources
from detectors import SeriesKey

NS = "shop"


def restart_playbooks(**trigger: Any) -> PlaybookSet:
    """``restart-on-errors``: a threshold signal on ``error_ratio`` of a deployment in :data:`NS`
    restarts it and verifies on 3 fresh samples; ``trigger`` adds to (or overrides) its trigger."""
    doc = {
        "apiVersion": "aiops/v1",
        "kind": "Playbook",
        "metadata": {"name": "restart-on-errors"},
        "spec": {
            "trigger": {
                "signal": "threshold",
                "metric": "error_ratio",
                "match": {"deployment": ".+"},
                "maxGap": "10m",
                **trigger,
            },
            "target": {"kind": "Deployment", "namespace": NS, "name": "{{ labels.deployment }}"},
            "actions": [{"restart": {}}],
            "verify": {"quiet": "2m", "within": "10m", "samples": 3},
        },
    }
    return load_sources([("restart.yaml", yaml.safe_dump(doc))])


def error_key(deployment: str) -> SeriesKey:
    """The ``error_ratio`` series of ``deployment`` in :data:`NS`."""
    return SeriesKey.of("error_ratio", {"namespace": NS, "deployment": deployment})
