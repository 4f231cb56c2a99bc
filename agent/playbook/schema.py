"""The JSON Schema of the playbook format, generated from the models (``playbooks/schema.json``).

Editors validate playbooks with it through the yaml-language-server comment at the top of each
file: ``# yaml-language-server: $schema=./schema.json``. ``aiops playbook schema`` prints it;
a unit test fails when the committed file is stale.
"""

from __future__ import annotations

import json
from typing import Any

from agent.playbook.models import Playbook

SCHEMA_ID = "https://aiops-agent.dev/schemas/playbook-v1.json"


def playbook_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one playbook document."""
    schema = Playbook.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(playbook_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
