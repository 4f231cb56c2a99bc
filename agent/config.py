"""The agent's one YAML config file, validated at start with located errors.

Every section has defaults, so an empty file is a valid config (it runs nothing but the HTTP
endpoints). Secrets are never written in the file: fields ending in ``_env`` name the
environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.durations import Duration
from agent.playbook.settings import PlaybooksConfig
from agent.yamlloc import (
    LocatedError,
    Location,
    YamlDocument,
    YamlValidationError,
    read_documents,
    validate_document,
)
from detectors.patterns import compile_pattern
from remediations.names import check_label


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConnection(_Model):
    """How to reach the Kafka cluster; TLS and SASL settings pass through to kafka-python."""

    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["localhost:9092"],
        min_length=1,
        description="host:port of the brokers: a list, or one comma-separated string",
    )
    client_id: str = Field("aiops-agent", description="the client id the brokers see")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="required with a SASL protocol"
    )
    sasl_username: str | None = Field(None, description="the SASL user")
    sasl_password_env: str | None = Field(None, description="environment variable holding the SASL password")
    ssl_cafile: str | None = Field(None, description="CA bundle to verify the brokers (TLS)")
    ssl_certfile: str | None = Field(None, description="client certificate (TLS)")
    ssl_keyfile: str | None = Field(None, description="client key (TLS)")
    ssl_password_env: str | None = Field(None, description="environment variable holding the key password")
    ssl_check_hostname: bool = Field(True, description="check the brokers' certificates name them")
    request_timeout: Duration = Field(30.0, description="how long one request to a broker may take")

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConnection:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            msg = f"security_protocol {self.security_protocol} needs sasl_mechanism"
            raise ValueError(msg)
        return self

    def client_kwargs(self, environ: dict[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients, with secrets read from the environment."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout * 1000),
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                kwargs["sasl_plain_username"] = self.sasl_username
            if self.sasl_password_env is not None:
                kwargs["sasl_plain_password"] = _secret(
                    env, self.sasl_password_env, "kafka.sasl_password_env"
                )
        if self.security_protocol in {"SSL", "SASL_SSL"}:
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name) is not None:
                    kwargs[name] = getattr(self, name)
            if self.ssl_password_env is not None:
                kwargs["ssl_password"] = _secret(env, self.ssl_password_env, "kafka.ssl_password_env")
        return kwargs


def _secret(env: Any, name: str, field: str) -> str:
    value = env.get(name)
    if value is None:
        msg = f"{field}: environment variable {name} is not set"
        raise ConfigError([LocatedError(Location("<environment>", 0, 0), field, msg)])
    return str(value)


class DecodeLimitsConfig(_Model):
    """What one Kafka message may cost to decode; a message past a limit is dead-lettered with the reason."""

    max_message_bytes: int = Field(8 << 20, ge=1, description="largest message value, checked before parsing")
    max_depth: int = Field(
        8, ge=1, description="deepest nesting of OTLP attribute values (arrayValue, kvlistValue)"
    )
    max_labels: int = Field(128, ge=1, description="most labels of one series")
    max_label_length: int = Field(4096, ge=1, description="longest label name, label value or metric name")
    max_series_length: int = Field(
        16384,
        ge=1,
        description="most characters of one series' metric name, label names and values together: "
        "what the agent keeps for each series",
    )
    max_decoded_bytes: int = Field(
        16 << 20, ge=1, description="most label text one OTLP message may produce (nested values re-encoded)"
    )
    max_future: Duration | None = Field(
        86_400.0, description="timestamps later than this after the agent's clock are refused; null: none"
    )
    max_past: Duration | None = Field(
        30 * 86_400.0,
        description="timestamps earlier than this before the agent's clock are refused; null: none",
    )


class PartitionStateConfig(_Model):
    """State moving with its partitions: checkpointed to a compacted topic, restored on assignment."""

    enabled: bool = Field(True, description="checkpoint and restore the detector state of each partition")
    topic: str = Field("aiops.state", min_length=1, description="compacted topic of the checkpoints")
    interval: Duration = Field(60.0, gt=0, description="how often each owned partition is checkpointed")
    max_bytes: int = Field(
        900_000,
        ge=1024,
        description="largest checkpoint chunk (one message, compressed); max.message.bytes must allow it",
    )
    max_inflated_bytes: int = Field(
        256 << 20, ge=1024, description="largest checkpoint chunk once decompressed; larger ones are skipped"
    )
    restore_timeout: Duration = Field(
        20.0, gt=0, description="longest wait to read the checkpoints of newly assigned partitions"
    )


class HandoverConfig(PartitionStateConfig):
    """Open incidents moving with their signals partitions (decisions from the topic): each
    partition's incidents written to the compacted state topic, taken over by its next owner."""

    enabled: bool = Field(
        True, description="hand the open incidents of a signals partition over to its next owner"
    )
    interval: Duration = Field(
        5.0,
        gt=0,
        description="least time between two writes of one signals partition's incidents "
        "(written while they or its offset change, and when it is given up)",
    )


class FreshnessConfig(_Model):
    """Freshness carried with the signals (decisions from the topic): each replica publishes, for
    the series it signalled recently, when each last reported and how many samples it sent, so the
    replica deciding their incidents can verify them (docs/scale-out.md)."""

    enabled: bool = Field(
        True,
        description="publish freshness records of recently signalled series to the signals topic, "
        "and verify incidents on them on the deciding replica (with signals.decisions)",
    )
    interval: Duration = Field(
        5.0,
        gt=0,
        description="least time between two freshness records of one series (sent while its "
        "sample count changes); staleness of a series heard of this way is judged on at least "
        "this interval",
    )
    window: Duration = Field(
        3600.0,
        gt=0,
        description="how long after its last signal a series' freshness is published and kept; "
        "longer than the longest verify.within of the playbooks",
    )
    max_series: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="most series whose freshness is published (the most recently signalled) and "
        "kept on the deciding side",
    )


class KafkaSourceConfig(_Model):
    """Consume samples from Kafka topics in a consumer group."""

    enabled: bool = Field(True, description="consume from Kafka (when the section is present)")
    topics: list[str] = Field(
        default_factory=lambda: ["aiops.metrics"], min_length=1, description="the topics of samples"
    )
    group_id: str = Field("aiops-agent", description="the consumer group: replicas share the partitions")
    format: Literal["auto", "adapter", "batch", "otlp"] = Field(
        "auto", description="the message format (docs/sources.md); auto: told apart per message"
    )
    dead_letter_topic: str = Field(
        "aiops.metrics.dlq", description="where messages that cannot be decoded go, with the reason"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts"
    )
    max_poll_records: int = Field(2000, ge=1, le=100_000, description="messages per poll")
    poll_timeout: Duration = Field(0.5, description="how long one poll waits for messages")
    fetch_max_wait: Duration = Field(
        0.5,
        gt=0,
        description="how long the broker may hold a fetch that finds no new records (shorter: "
        "lower latency on brokers that do not answer a waiting fetch when records arrive, more requests)",
    )
    session_timeout: Duration = Field(10.0, description="a consumer silent this long leaves the group")
    heartbeat_interval: Duration = Field(3.0, description="how often a consumer tells the group it lives")
    lag_interval: Duration = Field(5.0, description="how often consumer lag is measured")
    decode_worker: bool = Field(
        True,
        description="decode messages in a child process, beside the consumer (false: in the agent's thread)",
    )
    limits: DecodeLimitsConfig = Field(default_factory=DecodeLimitsConfig)
    state: PartitionStateConfig = Field(default_factory=PartitionStateConfig)


class PrometheusQuery(_Model):
    """One PromQL query; each series it returns becomes a SeriesKey named ``name``."""

    name: str = Field(
        min_length=1, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", description="the series' metric name; unique"
    )
    query: str = Field(
        min_length=1, description="the PromQL expression; each series it returns is one series"
    )


class PrometheusSourceConfig(_Model):
    """Run PromQL queries every ``interval``; backfill ``backfill`` of history at start.

    With leader election on (``executor.leader_election``), only the replica holding the Lease
    queries; another backfills when it takes the Lease over (docs/scale-out.md).
    """

    enabled: bool = Field(True, description="query Prometheus (when the section is present)")
    url: str = Field("http://localhost:9090", description="the Prometheus server")
    interval: Duration = Field(
        30.0,
        description="how often the queries run, evaluated at the multiples of interval since the epoch, "
        "and the backfill's step",
    )
    timeout: Duration = Field(
        10.0, description="how long one HTTP call may take, from the request to the whole answer parsed"
    )
    max_response_bytes: int = Field(
        64 << 20,
        ge=1024,
        le=1 << 30,
        description="the largest answer read (bytes, decompressed); a larger one is an error, not parsed",
    )
    backfill: Duration = Field(
        3600.0,
        description="history fetched at start and on taking the Lease over (what this replica has "
        "not seen, at most this much), for the detectors to learn",
    )
    verify_tls: bool = Field(True, description="verify the server's certificate")
    bearer_token_env: str | None = Field(None, description="environment variable holding a bearer token")
    queries: list[PrometheusQuery] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> PrometheusSourceConfig:
        names = [q.name for q in self.queries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            msg = f"query names must be unique, repeated: {dupes}"
            raise ValueError(msg)
        if self.interval <= 0:
            msg = "interval must be positive"
            raise ValueError(msg)
        return self


class BasicAuthConfig(_Model):
    """HTTP basic auth, as Alertmanager's ``http_config.basic_auth`` sends it."""

    username: str = Field(min_length=1, description="the user Alertmanager sends")
    password_file: Path = Field(description="file holding the password (a mounted Secret)")


class AlertmanagerSourceConfig(_Model):
    """Who may post to ``POST /alertmanager``: the credentials Alertmanager's ``http_config`` sends.

    Without credentials every webhook is refused (401), unless ``insecure: true`` says that any
    client the network lets through may post alerts.
    """

    bearer_token_file: Path | None = Field(
        None,
        description="file holding the bearer token (http_config.authorization.credentials_file)",
    )
    basic_auth: BasicAuthConfig | None = Field(
        None, description="username and password file (http_config.basic_auth)"
    )
    insecure: bool = Field(False, description="accept webhooks without credentials (not in production)")

    @model_validator(mode="after")
    def _one_way(self) -> AlertmanagerSourceConfig:
        if self.insecure and (self.bearer_token_file is not None or self.basic_auth is not None):
            msg = "insecure: true with credentials configured; remove one or the other"
            raise ValueError(msg)
        return self


class SourcesConfig(_Model):
    """Where samples come from."""

    kafka: KafkaSourceConfig | None = None
    prometheus: PrometheusSourceConfig | None = None
    alertmanager: AlertmanagerSourceConfig = Field(default_factory=AlertmanagerSourceConfig)


class DetectorConfig(_Model):
    """One detector of the bank: its built-in name, its parameters and its signal bar."""

    type: str = Field("threshold", description="the built-in detector (docs/detectors.md)")
    min_score: float = Field(0.5, gt=0.0, le=1.0, description="the least score that is a signal")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the detector's parameters, checked when the config loads"
    )
    metrics: str | None = Field(
        None,
        description="regular expression (RE2 syntax), full-matched against metric names: the series it "
        "runs on",
    )
    hold: bool = Field(
        False, description="keep an alarm up while the series stays away from its pre-alarm level"
    )

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)  # a ValueError naming the problem
        return value


class SignalsConfig(_Model):
    """Where signals go: the log, and a Kafka topic (on by default when a Kafka source is configured)."""

    log: bool = Field(True, description="log each signal")
    kafka: bool | None = Field(
        None, description="publish signals to Kafka; default: when sources.kafka is on"
    )
    topic: str = Field("aiops.signals", min_length=1, description="the Kafka topic of signals")
    decisions: bool = Field(
        False,
        description=(
            "the playbook engine takes its signals from the topic (keyed by target) in the consumer "
            "group decision_group, so each target's incidents are decided by one replica; "
            "every replica executes for its own targets"
        ),
    )
    decision_group: str = Field(
        "aiops-agent-decisions", min_length=1, description="the consumer group of the deciding side"
    )
    handover: HandoverConfig = Field(default_factory=HandoverConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)


class HttpConfig(_Model):
    """The health, metrics and webhook endpoint, and what it spends on clients."""

    host: str = Field(
        "0.0.0.0",  # noqa: S104 - the daemon serves probes and scrapes inside its pod
        description="the address to listen on",
    )
    port: int = Field(
        8080, ge=0, le=65535, description="the port of /metrics, /healthz, /readyz and webhooks"
    )
    workers: int = Field(8, ge=1, le=256, description="threads serving connections")
    queue: int = Field(64, ge=1, le=10_000, description="connections waiting for a thread; past it: 429")
    read_timeout: Duration = Field(10.0, description="a client must deliver its whole request within this")
    max_body: int = Field(4 << 20, ge=1, description="largest POST body; larger: 413, unread")
    post_concurrency: int = Field(2, ge=1, le=64, description="POSTs handled at once; past it: 429")
    per_client: int | None = Field(
        8,
        ge=1,
        le=10_000,
        description="connections one client address may hold, waiting or served; past it: 429 (one "
        "client's stalled connections cannot starve the probes); null: no limit",
    )
    incidents: bool = Field(
        True,
        description="serve GET /incidents and /incidents/ID: the decision records (no secrets, but "
        "the names of namespaces, workloads and playbooks, like /metrics); false: 404",
    )
    max_incidents: int = Field(
        1000, ge=1, le=100_000, description="decision records kept in memory for /incidents (oldest go)"
    )


class LogConfig(_Model):
    """Logging format and level (``--log-format`` on the command line wins)."""

    format: Literal["human", "json"] = Field("human", description="one line of text, or one JSON object")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the least level logged")


class EngineConfig(_Model):
    """The main loop."""

    series_limit: int = Field(
        100_000, ge=1, description="most series tracked; past it new series are dropped"
    )
    series_per_source: int | None = Field(
        80_000,
        ge=1,
        description="most series one source (kafka, prometheus) may register, so one cannot fill the "
        "table alone; null: series_limit",
    )
    series_per_metric: int | None = Field(
        20_000,
        ge=1,
        description="most series of one metric name, so junk labels on one metric (a request id) cannot "
        "fill the table; null: no limit",
    )
    series_idle: Duration | None = Field(
        3600.0, description="a series not seen this long is evicted, its state freed; null: never"
    )
    evict_every: Duration = Field(60.0, description="how often idle series are looked for")
    shutdown_timeout: Duration = Field(10.0, description="a clean shutdown past this exits 1")
    stall_after: Duration = Field(60.0, description="/healthz fails when the loop has not turned this long")


class ApprovalsConfig(_Model):
    """Where actions waiting for a person are kept, and what they may cost."""

    store: Literal["directory", "configmap"] = Field(
        "directory",
        description="configmap: one ConfigMap per approval in the agent's namespace, shared by every "
        "replica and kept when a pod goes; directory: files in executor.approvals_dir (one pod)",
    )
    namespace: str | None = Field(
        None,
        description="namespace of the approval ConfigMaps; none: executor.lease_namespace, else "
        "$POD_NAMESPACE, else 'default'",
    )
    max_pending: int = Field(
        100,
        ge=1,
        le=10_000,
        description="approvals waiting for a person or approved and not yet run; beyond, an action "
        "that needs approval fails with the reason",
    )
    max_record_bytes: int = Field(
        65536,
        ge=4096,
        le=900_000,
        description="bytes of one approval record (its plan is cut, then its outcome, to fit); a "
        "request larger than this fails",
    )
    retention: Duration = Field(
        86400.0, ge=0, description="executed, rejected and expired approvals are deleted this long after"
    )
    max_finished: int = Field(
        500,
        ge=0,
        le=10_000,
        description="executed, rejected and expired approvals kept at most (the newest), whatever their age",
    )
    takeover: Duration = Field(
        60.0,
        gt=0,
        description="a decided or expired approval of another replica that has not acted on it this "
        "long is acted on here (its replica is gone)",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None:
            check_label("executor.approvals.namespace", value)
        return value


class ExecutorConfig(_Model):
    """The executor: whether actions really run, and where (the guardrails are ``playbooks.guardrails``).

    Disabled (the default), the playbook engine plans and logs every action and writes nothing.
    """

    enabled: bool = Field(False, description="run actions against the cluster; off: plan and log only")
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; none: in-cluster service account, else KUBECONFIG"
    )
    context: str | None = Field(None, description="kubeconfig context; none: the current one")
    gitops: Literal["skip", "annotate", "act"] = Field(
        "skip",
        description=(
            "targets managed by Argo CD or Flux: skip them with a reason, act and annotate them, or act"
        ),
    )
    approvals_dir: Path = Field(
        Path("/tmp/aiops-approvals"),  # noqa: S108 - approval records, not secrets
        description="where pending approvals are kept with approvals.store: directory "
        "(aiops approve/reject write here)",
    )
    approvals: ApprovalsConfig = Field(
        default_factory=ApprovalsConfig, description="the store of actions waiting for a person"
    )
    approval_ttl: Duration = Field(3600.0, description="a pending approval expires after this long")
    audit_file: Path | None = Field(
        None, description="append audit JSON lines here too (and remember executed keys across restarts)"
    )
    audit_topic: str | None = Field(
        "aiops.audit", description="Kafka topic of the audit trail; none: no Kafka audit"
    )
    events: bool = Field(True, description="write a Kubernetes Event on the target for each decision")
    instance: str | None = Field(None, description="this replica's identity; default: $POD_NAME or hostname")
    lease_name: str = Field("aiops-agent-leader", min_length=1, description="the Lease of leader election")
    lease_namespace: str | None = Field(None, description="default: $POD_NAMESPACE, else 'default'")
    lease_duration: float = Field(15.0, gt=2, description="seconds a leader holds the lease unrenewed")
    renew_deadline: float = Field(
        10.0, gt=1, description="seconds a leader tries to renew before it steps down"
    )
    retry_period: float = Field(2.0, ge=1, description="seconds between lease attempts")
    leader_election: bool = Field(
        True,
        description="elect a leader on a Lease: only the leader polls Prometheus, and executes unless "
        "signals.decisions; off: this replica executes and polls alone",
    )
    workers: int = Field(
        4,
        ge=0,
        le=64,
        description="threads that run actions off the engine loop, so a slow API never stalls "
        "ingestion; 0: on the engine loop itself",
    )
    queue: int = Field(64, ge=1, le=10_000, description="actions waiting for a worker; beyond: retried later")
    action_deadline: Duration = Field(
        120.0,
        gt=0,
        description="an action's API calls (and their retries) end this long after it starts; "
        "a retryable failure after that is tried again within the playbook's verify.within",
    )
    actions_record: str | None = Field(
        "aiops-agent-actions",
        min_length=1,
        description="Lease (in lease_namespace) recording the agent's actions of the last hour, so "
        "the agent-wide hourly budgets survive restarts and leader changes; none: counted in memory",
    )

    @model_validator(mode="after")
    def _lease_timing(self) -> ExecutorConfig:
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period:
            msg = "lease timing needs lease_duration > renew_deadline > 1.2 x retry_period"
            raise ValueError(msg)
        return self


class AgentConfig(_Model):
    """The whole config file."""

    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    detectors: list[DetectorConfig] = Field(default_factory=list)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    playbooks: PlaybooksConfig = Field(default_factory=PlaybooksConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @property
    def kafka_source_enabled(self) -> bool:
        """Whether samples are consumed from Kafka."""
        return self.sources.kafka is not None and self.sources.kafka.enabled

    @property
    def kafka_signals_enabled(self) -> bool:
        """Whether signals are published to Kafka."""
        return self.kafka_source_enabled if self.signals.kafka is None else self.signals.kafka


class ConfigError(YamlValidationError):
    """The config file is missing, unreadable or invalid; every error is located."""


#: The largest config file read; a larger one is refused before it is parsed (the shipped one is 8 KB).
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> AgentConfig:
    """Read and validate the config at ``path``; raise :class:`ConfigError` on any problem.

    Every problem is reported at once: the fields' errors and each detector's parameters. A file
    over ``max_bytes`` is refused before it is parsed (never read past the limit).
    """
    config, errors = _validate(path, max_bytes=max_bytes)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def check_config(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES, local: bool = True) -> AgentConfig:
    """:func:`load_config`, and with ``local`` what only the machine it runs on can say: that the
    playbook directory exists and its playbooks load. Raise :class:`ConfigError` with every
    problem found (``aiops config check``).
    """
    config, errors = _validate(path, max_bytes=max_bytes)
    doc = _document(path, max_bytes) if local else None
    section = doc.data.get("playbooks") if doc is not None and isinstance(doc.data, dict) else None
    given = section.get("directory") if isinstance(section, dict) else None
    if doc is not None and isinstance(given, str) and given:
        where = doc.locate(["playbooks", "directory"])
        if not Path(given).is_dir():
            what = "does not exist" if not Path(given).exists() else "is not a directory"
            errors.append(LocatedError(where, "playbooks.directory", f"{given} {what}"))
        else:
            from agent.playbook.loader import PlaybookLoadError, load_paths  # noqa: PLC0415 - only here

            try:
                load_paths([Path(given)])
            except PlaybookLoadError as exc:
                errors.extend(exc.errors)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def _document(path: Path, max_bytes: int) -> YamlDocument | None:
    """The file's one document, or None when it cannot be read (the validation says why)."""
    try:
        docs = read_documents(path, max_bytes=max_bytes)
    except YamlValidationError:
        return None
    return docs[0] if len(docs) == 1 else None


def _validate(path: Path, *, max_bytes: int) -> tuple[AgentConfig | None, list[LocatedError]]:
    """The config (None when invalid) and every error found in it."""
    try:
        docs = read_documents(path, max_bytes=max_bytes)
    except YamlValidationError as exc:
        return None, list(exc.errors)
    if len(docs) > 1:
        loc = docs[1].locate([])
        return None, [LocatedError(loc, "", "a config file holds one YAML document, found several")]
    if not docs or docs[0].data is None:
        return AgentConfig(), []
    doc = docs[0]
    if not isinstance(doc.data, dict):
        found = type(doc.data).__name__
        return None, [LocatedError(doc.locate([]), "", f"expected a mapping at the top, got {found}")]
    config: AgentConfig | None = None
    errors: list[LocatedError] = []
    try:
        config = validate_document(doc, AgentConfig)
    except YamlValidationError as exc:
        errors.extend(exc.errors)
    # the detectors' parameters are checked even when other fields are wrong, so one run shows all
    detectors = doc.data.get("detectors")
    if isinstance(detectors, list):
        reported = {e.field for e in errors}
        errors.extend(e for e in _detector_errors(detectors, doc) if e.field not in reported)
    return (config if not errors else None), errors


def _detector_errors(detectors: list[Any], doc: YamlDocument) -> list[LocatedError]:
    """Detector parameters are validated by the detectors themselves, at load time."""
    # local import: detectors is the lower layer, and building a throwaway bank is cheap
    from detectors import SeriesRegistry, build_detector  # noqa: PLC0415
    from detectors.base import DetectorError  # noqa: PLC0415

    errors = []
    for i, det in enumerate(detectors):
        if not isinstance(det, dict) or not isinstance(det.get("params", {}), dict):
            continue  # the model's own error says what is wrong with it
        kind = det.get("type", "threshold")
        try:
            build_detector(str(kind), det.get("params") or {}, SeriesRegistry(limit=1))
        except DetectorError as exc:
            field = "type" if "unknown detector" in str(exc) else "params"
            errors.append(
                LocatedError(doc.locate(["detectors", i, field]), f"detectors[{i}].{field}", str(exc))
            )
    return errors
