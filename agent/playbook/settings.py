"""The ``playbooks`` section of the agent config: where playbooks live, reload, status, guardrails."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent.durations import Duration
from agent.playbook.guardrails import GuardrailDefaults

#: Where the daemon writes the playbook status and ``aiops playbook status`` reads it by default
#: (in a pod: an emptyDir at /tmp, read with ``kubectl exec``).
DEFAULT_STATUS_FILE = Path("/tmp/aiops-playbook-status.json")  # noqa: S108 - a status file, not a secret


class PlaybooksConfig(BaseModel):
    """Playbooks: the directory (a ConfigMap mount in a cluster), hot reload and guardrail defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = Field(None, description="the playbook directory; none: no playbooks run")
    reload_interval: Duration = Field(10.0, description="how often the directory is checked for changes")
    status_file: Path = Field(DEFAULT_STATUS_FILE, description="where the reload status is written")
    alertmanager: bool = Field(True, description="accept Alertmanager webhooks on POST /alertmanager")
    guardrails: GuardrailDefaults = Field(default_factory=GuardrailDefaults)
