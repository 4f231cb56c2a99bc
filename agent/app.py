"""Wiring: build the agent's components from a validated config, run them, shut down cleanly."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agent.audit import Audit, AuditSink
from agent.clock import Clock
from agent.config import AgentConfig, ConfigError, DetectorConfig
from agent.decisions import DecisionRecords, RecordBounds, incidents_route
from agent.engine import Engine
from agent.http import HttpServer, ServerLimits
from agent.metrics import AgentMetrics
from agent.playbook.engine import TargetFacts
from agent.playbook.events import LogAudit
from agent.playbook.guardrails import protecting
from agent.playbook.loader import PlaybookLoadError
from agent.playbook.requests import Executor
from agent.playbook.runtime import PlaybookRuntime
from agent.pool import PoolSettings
from agent.sinks import LogSink, SignalSink
from agent.sources.alertmanager import alertmanager_post_route
from agent.sources.base import Source
from agent.yamlloc import LocatedError, Location
from detectors import DetectorBank, DetectorSpec, SeriesRegistry, Signal, build_detector
from detectors.hold import AlarmHold
from remediations.types import Target

if TYPE_CHECKING:
    from agent.freshness import FreshnessForwarder, FreshnessView
    from agent.leader import LeaseLeader
    from agent.routing import DecisionConsumer

log = logging.getLogger("aiops.agent")


def detector_bank(detectors: Sequence[DetectorConfig], series: SeriesRegistry) -> DetectorBank:
    """The detector bank the config's ``detectors`` describe: the one composition the daemon and
    the replay both build, so a replay shows what the config would detect."""
    specs = [
        DetectorSpec(
            build_detector(d.type, d.params, series),
            d.min_score,
            metrics=d.metrics,
            hold=AlarmHold() if d.hold else None,
        )
        for d in detectors
    ]
    return DetectorBank(series, specs)


class Agent:
    """The daemon: sources -> detector bank -> sinks, with health and metrics over HTTP."""

    def __init__(
        self,
        config: AgentConfig,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        extra_sinks: list[SignalSink] | None = None,
        kubeconfig: Path | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.environ = dict(os.environ if environ is None else environ)
        self.kubeconfig = kubeconfig
        self.stop = threading.Event()
        self.metrics = AgentMetrics()
        if config.kafka_source_enabled or config.kafka_signals_enabled:
            config.kafka.client_kwargs(self.environ)  # a missing secret fails now, not at first connect
        self.series = SeriesRegistry(
            limit=config.engine.series_limit,
            per_owner=config.engine.series_per_source,
            per_metric=config.engine.series_per_metric,
        )
        self.bank = detector_bank(config.detectors, self.series)
        self.leader: LeaseLeader | None = None
        self._closers: list[Callable[[], None]] = []
        self.facts: TargetFacts | None = None
        self.audit_sinks: list[AuditSink] = []
        """Where the executor's decisions go besides the log (the Kafka topic); engine events too."""
        self.decisions = DecisionRecords(bounds=RecordBounds(max_incidents=config.http.max_incidents))
        """One record per incident, folded from the engine's events and the executor's decisions;
        published to the audit file and topic, served at /incidents."""
        executor = self._build_executor() if config.executor.enabled else None
        self.sources = self._build_sources()  # after the executor: the Lease decides who polls Prometheus
        self.freshness: FreshnessView | None = None
        """With decisions from the topic: the freshness the engine verifies on (this bank's and
        the records of the replicas that detect the other series)."""
        self.forwarder: FreshnessForwarder | None = None
        self.source_id = ""
        if config.signals.decisions and config.signals.freshness.enabled:
            from agent.freshness import FreshnessView, source_id  # noqa: PLC0415

            self.source_id = source_id(self.environ)
            self.freshness = FreshnessView(
                config.signals.freshness, self.bank.freshness, self.source_id, clock, self.metrics
            )
        # the agent never acts on itself: its own namespace is protected like the cluster's
        guardrails = protecting(config.playbooks.guardrails, self.environ.get("POD_NAMESPACE"))
        playbooks_config = config.playbooks.model_copy(update={"guardrails": guardrails})
        self.playbooks = PlaybookRuntime(
            playbooks_config,
            clock,
            self.metrics,
            executor=executor,
            audit=Audit([LogAudit(), *self.audit_sinks, self.decisions]),
            facts=self.facts,
            freshness=self.freshness if self.freshness is not None else self.bank.freshness,
            pool=PoolSettings(
                workers=config.executor.workers,
                queue=config.executor.queue,
                deadline=config.executor.action_deadline,
            ),
        )
        try:
            self.playbooks.load()  # an invalid playbook set at start is as fatal as a bad config
        except PlaybookLoadError as exc:
            raise ConfigError(exc.errors) from exc
        self.routing: DecisionConsumer | None = None
        if config.signals.decisions:
            if not config.kafka_signals_enabled:
                where = Location("<config>", 0, 0)
                msg = "signals.decisions needs the signals on Kafka (signals.kafka)"
                raise ConfigError([LocatedError(where, "signals.decisions", msg)])
            from agent.routing import DecisionConsumer  # noqa: PLC0415

            kafka_source = config.sources.kafka
            handover = None
            if config.signals.handover.enabled:
                from agent.handover import IncidentHandover  # noqa: PLC0415

                handover = IncidentHandover(
                    config.signals.handover,
                    config.signals.decision_group,
                    config.kafka,
                    self.metrics,
                    clock,
                    self.stop,
                    self.environ,
                )
            self.routing = DecisionConsumer(
                config.kafka,
                config.signals.topic,
                config.signals.decision_group,
                self.playbooks.engine,
                self.metrics,
                clock,
                self.environ,
                session_timeout=kafka_source.session_timeout if kafka_source else 10.0,
                heartbeat_interval=kafka_source.heartbeat_interval if kafka_source else 3.0,
                handover=handover,
                freshness=self.freshness,
            )
        # the engine decides on this replica's signals, unless they go through the topic
        engine_sinks: list[SignalSink] = [] if self.routing is not None else [self.playbooks.engine]
        self.sinks = [*self._build_sinks(), *engine_sinks, *(extra_sinks or [])]
        self.engine = Engine(
            self.sources,
            self.bank,
            self.sinks,
            clock,
            self.metrics,
            self.stop,
            series_idle=config.engine.series_idle,
            evict_every=config.engine.evict_every,
        )
        self.http: HttpServer | None = None

    def _build_sources(self) -> list[Source]:
        cfg = self.config
        sources: list[Source] = []
        if cfg.sources.kafka is not None and cfg.sources.kafka.enabled:
            from agent.sources.kafka import KafkaSource  # noqa: PLC0415 - only loaded when configured

            sources.append(
                KafkaSource(
                    cfg.sources.kafka,
                    cfg.kafka,
                    self.series,
                    self.metrics,
                    self.clock,
                    self.stop,
                    self.environ,
                    bank=self.bank,
                )
            )
        if cfg.sources.prometheus is not None and cfg.sources.prometheus.enabled:
            from agent.sources.prometheus import PrometheusSource  # noqa: PLC0415

            # with a Lease, only its holder polls; the standby backfills from Prometheus on takeover
            sources.append(
                PrometheusSource(
                    cfg.sources.prometheus,
                    self.series,
                    self.metrics,
                    self.clock,
                    self.stop,
                    self.environ,
                    leader=self.leader,
                )
            )
        return sources

    def _build_sinks(self) -> list[SignalSink]:
        sinks: list[SignalSink] = []
        if self.config.signals.log:
            sinks.append(LogSink())
        if self.config.kafka_signals_enabled:
            from agent.kafka_client import ResilientProducer  # noqa: PLC0415
            from agent.kafka_sink import KafkaSignalSink  # noqa: PLC0415

            producer = ResilientProducer(self.config.kafka, self.clock, self.stop, name="signals")
            key = None
            if self.config.signals.decisions:
                from agent.routing import target_key  # noqa: PLC0415

                engine = self.playbooks.engine
                key = lambda s: target_key(engine.playbooks, s)  # noqa: E731 - the set changes on reload
            sinks.append(KafkaSignalSink(producer, self.config.signals.topic, key=key, metrics=self.metrics))
            if key is not None and self.freshness is not None:
                from agent.freshness import FreshnessForwarder  # noqa: PLC0415

                self.forwarder = FreshnessForwarder(
                    self.config.signals.freshness,
                    ResilientProducer(self.config.kafka, self.clock, self.stop, name="freshness"),
                    self.config.signals.topic,
                    key,
                    self.bank.freshness,
                    self.clock,
                    self.metrics,
                    self.source_id,
                )
                sinks.append(self.forwarder)
        return sinks

    def _build_executor(self) -> Executor:
        """The executor on the cluster: clients, leader election, audit sinks (only when enabled)."""
        from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

        from agent.approvals import open_store  # noqa: PLC0415
        from agent.audit import KafkaAuditSink, LogAuditSink  # noqa: PLC0415
        from agent.executor import KubeExecutor  # noqa: PLC0415
        from agent.facts import KubeFacts  # noqa: PLC0415
        from agent.leader import AlwaysLeader, LeaderState, LeaseLeader, default_identity  # noqa: PLC0415
        from remediations.kube import connect  # noqa: PLC0415

        cfg = self.config.executor
        kubeconfig = self.kubeconfig if self.kubeconfig is not None else cfg.kubeconfig
        try:
            kube = connect(
                kubeconfig, context=cfg.context, clock=self.clock, environ=self.environ, stop=self.stop
            )
        except ConfigException as exc:
            where = Location("<kubernetes>", 0, 0)
            msg = f"cannot load a Kubernetes configuration (in-cluster, --kubeconfig, KUBECONFIG): {exc}"
            raise ConfigError([LocatedError(where, "executor", msg)]) from exc
        self._closers.append(kube.close)
        lease_namespace = cfg.lease_namespace or self.environ.get("POD_NAMESPACE") or "default"
        record = None if cfg.actions_record is None else Target("Lease", lease_namespace, cfg.actions_record)
        self.facts = KubeFacts(kube, self.clock, agent_record=record)
        identity = cfg.instance or default_identity(self.environ)
        leader: LeaderState = AlwaysLeader()
        if cfg.leader_election:
            self.leader = LeaseLeader(
                kube.api_client,
                name=cfg.lease_name,
                namespace=lease_namespace,
                identity=identity,
                lease_duration=cfg.lease_duration,
                renew_deadline=cfg.renew_deadline,
                retry_period=cfg.retry_period,
                metrics=self.metrics,
            )
            if not self.config.signals.decisions:
                # with decisions from the signals topic, owning a target's partition is what makes
                # a replica the one that acts on it; the Lease stays for what has no partition
                leader = self.leader
        sinks: list[AuditSink] = [LogAuditSink(cfg.audit_file)]
        if cfg.audit_topic:
            from agent.kafka_client import ResilientProducer  # noqa: PLC0415

            producer = ResilientProducer(self.config.kafka, self.clock, self.stop, name="audit")
            self._closers.append(producer.close)
            sinks.append(KafkaAuditSink(producer, cfg.audit_topic))
        self.audit_sinks = sinks[1:]  # the topic: the engine's incident events go there too
        self.decisions.publish_to(sinks)  # the records: to the file and the topic
        return KubeExecutor(
            kube,
            cfg,
            self.clock,
            Audit([*sinks, self.decisions]),
            leader=leader,
            metrics=self.metrics,
            instance=identity,
            agent_record=record,
            approvals=open_store(cfg, kube, self.environ),
        )

    def healthy(self) -> tuple[bool, str]:
        """Live while the engine loop keeps turning."""
        idle = self.clock.now() - self.engine.last_turn
        if idle > self.config.engine.stall_after:
            return False, f"engine loop has not turned for {idle:.0f} s"
        return True, "engine loop turning"

    def ready(self) -> tuple[bool, str]:
        """Ready when every source is connected (or, on standby, waiting for the Lease).

        A source standing by is ready here while its ``aiops_source_ready`` says it is not connected."""
        down = [s.name for s in self.sources if not s.ready]
        for s in self.sources:
            standing_by = getattr(s, "standing_by", False)  # only the Prometheus source has a standby
            self.metrics.source_ready.labels(s.name).set(0 if s.name in down or standing_by else 1)
        return (False, f"sources not ready: {', '.join(down)}") if down else (True, "all sources ready")

    def start_http(self) -> int:
        """Serve /metrics, /healthz, /readyz and /incidents; return the bound port."""
        route = self.playbooks.alertmanager_route()
        if self.routing is not None:  # alerts reach the replica that owns their target, as signals do
            from agent.kafka_sink import KafkaSignalSink  # noqa: PLC0415
            from agent.sources.alertmanager import alertmanager_route  # noqa: PLC0415

            topic = next(s for s in self.sinks if isinstance(s, KafkaSignalSink))

            def publish(signals: Sequence[Signal]) -> None:
                topic.emit(signals)
                topic.flush()

            route = alertmanager_route(publish, self.clock.now, self.metrics)
        routes = (
            {"/alertmanager": alertmanager_post_route(route, self.config.sources.alertmanager, self.metrics)}
            if self.config.playbooks.alertmanager
            else {}
        )
        http = self.config.http
        gets = {"/incidents": incidents_route(self.decisions)} if http.incidents else {}
        self.http = HttpServer(
            http.host,
            http.port,
            self.metrics.registry,
            self.healthy,
            self.ready,
            routes,
            ServerLimits(
                workers=http.workers,
                queue=http.queue,
                read_timeout=http.read_timeout,
                max_body=http.max_body,
                post_concurrency=http.post_concurrency,
                per_client=http.per_client,
            ),
            gets,
        )
        self.http.start()
        return self.http.port

    def run(self) -> None:
        """Start the sources and loop until :attr:`stop` is set; always releases everything."""
        try:
            self.engine.start()
            if self.leader is not None:
                self.leader.start()
            self.playbooks.start(self.stop)
            if self.routing is not None:
                self.routing.start(self.stop)
            if self.forwarder is not None:
                self.forwarder.start(self.stop)
            log.info(
                "agent running: %d source(s), %d detector(s), %d sink(s)",
                len(self.sources),
                len(self.bank.specs),
                len(self.sinks),
            )
            self.engine.run()
        finally:
            self.stop.set()
            self.playbooks.join()
            if self.routing is not None:
                self.routing.join()
            if self.forwarder is not None:
                self.forwarder.join()
            if self.leader is not None:
                self.leader.stop()
            for close in self._closers:
                try:
                    close()
                except Exception:  # closing must go on
                    log.exception("closing %s failed", close)
            self.engine.close()
            if self.http is not None:
                self.http.close()
            log.info("agent stopped after %d samples", self.engine.samples_processed)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT finish the batch in hand, commit, close, and exit within the timeout."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self.stop.is_set():
                return
            log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
            self.stop.set()
            watchdog = threading.Timer(self.config.engine.shutdown_timeout, self._overdue)
            watchdog.daemon = True
            watchdog.start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _overdue(self) -> None:
        log.error(
            "shutdown took longer than %.0f s; exiting without a clean close",
            self.config.engine.shutdown_timeout,
        )
        logging.shutdown()
        os._exit(1)
