"""Playbooks: YAML that binds signals to guarded remediations.

One module per concern:

- :mod:`~agent.playbook.models` -- the format (pydantic), the source of validation and of the JSON Schema;
- :mod:`~agent.playbook.actions` -- the closed set of actions and their parameter models;
- :mod:`~agent.playbook.fields` -- durations, label names and regular expressions as field types;
- :mod:`~agent.playbook.templating` -- ``{{ labels.x }}`` substitution, Kubernetes name checks;
- :mod:`~agent.playbook.loader` -- files and documents to a :class:`~agent.playbook.loader.PlaybookSet`,
  every error located;
- :mod:`~agent.playbook.schema` -- ``playbooks/schema.json``;
- :mod:`~agent.playbook.guardrails` -- agent defaults, per-playbook guardrails, the checks;
- :mod:`~agent.playbook.requests` -- ActionRequest / ActionResult and the Executor protocol;
- :mod:`~agent.playbook.events` -- the audit events and sinks;
- :mod:`~agent.playbook.engine` -- signals to incidents to action requests;
- :mod:`~agent.playbook.watcher` -- hot reload of the playbook directory, status file;
- :mod:`~agent.playbook.runtime` -- all of it wired for the daemon;
- :mod:`~agent.playbook.rehearsal` -- recorded signals through the engine on virtual time;
- :mod:`~agent.playbook.explain` -- a playbook in plain words;
- :mod:`~agent.playbook.settings` -- the ``playbooks`` section of the agent config.
"""
