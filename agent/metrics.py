"""The agent's own Prometheus metrics, on a registry of its own (one per agent instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    """Every metric the agent exports; components are handed this object, never globals."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.samples_in = Counter("aiops_samples_in", "Samples received, by source", ["source"], registry=r)
        self.batches = Counter(
            "aiops_batches", "Batches processed by the engine, by source", ["source"], registry=r
        )
        self.consumer_lag = Gauge(
            "aiops_consumer_lag_messages",
            "Kafka consumer lag per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "aiops_dead_lettered",
            "Messages sent to the dead-letter topic, by source and reason",
            ["source", "reason"],
            registry=r,
        )
        self.series_dropped = Counter(
            "aiops_series_dropped",
            "Samples dropped because the series cardinality limit was reached",
            registry=r,
        )
        self.series_active = Gauge(
            "aiops_series_active", "Series registered with the detector bank", registry=r
        )
        self.series_evicted = Counter(
            "aiops_series_evicted", "Series evicted after engine.series_idle without a sample", registry=r
        )
        self.series_refused = Counter(
            "aiops_series_refused",
            "New series refused at the series limit or a source's limit (engine.series_per_source)",
            ["source"],
            registry=r,
        )
        self.signals_out = Counter(
            "aiops_signals", "Signals emitted, by kind and detector", ["kind", "detector"], registry=r
        )
        self.loop_latency = Histogram(
            "aiops_loop_latency_seconds",
            "Time from a batch's arrival to its commit",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.loop_last_turn = Gauge(
            "aiops_loop_last_turn_timestamp_seconds", "When the engine loop last completed a turn", registry=r
        )
        self.source_ready = Gauge(
            "aiops_source_ready", "1 when a source is connected and healthy", ["source"], registry=r
        )
        self.source_errors = Counter(
            "aiops_source_errors",
            "Errors talking to a source, by source and kind",
            ["source", "kind"],
            registry=r,
        )
        self.prometheus_active = Gauge(
            "aiops_prometheus_source_active",
            "1 while this replica polls Prometheus: it holds the Lease, or no Lease is asked",
            registry=r,
        )
        self.prometheus_queries = Counter(
            "aiops_prometheus_queries",
            "Queries sent to Prometheus, by kind (instant | range)",
            ["kind"],
            registry=r,
        )
        self.prometheus_backfill_seconds = Histogram(
            "aiops_prometheus_backfill_seconds",
            "Time the range queries of a backfill took (at start, or on taking the Lease over)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.sink_errors = Counter(
            "aiops_sink_errors", "Errors delivering signals, by sink", ["sink"], registry=r
        )
        self.partition_stuck = Gauge(
            "aiops_kafka_partition_stuck",
            "1 while a partition's records are read again because the decode worker died on them",
            ["topic", "partition"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "aiops_kafka_partitions_owned",
            "Partitions of each metrics topic this replica owns",
            ["topic"],
            registry=r,
        )
        self.topic_partitions = Gauge(
            "aiops_kafka_topic_partitions",
            "Partitions each metrics topic has, as this replica last saw it",
            ["topic"],
            registry=r,
        )
        self.rebalances = Counter(
            "aiops_kafka_rebalances", "Partition assignments this replica took part in", registry=r
        )
        self.checkpoint_bytes = Gauge(
            "aiops_state_checkpoint_bytes",
            "Size of the last detector-state checkpoint of each owned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_series = Gauge(
            "aiops_state_checkpoint_series",
            "Series in the last detector-state checkpoint of each owned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_time = Gauge(
            "aiops_state_checkpoint_timestamp_seconds",
            "When each owned partition's detector-state checkpoint was last written or found current",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_errors = Counter(
            "aiops_state_checkpoint_errors",
            "Checkpoints not written or not restored, by reason",
            ["reason"],
            registry=r,
        )
        self.restore_seconds = Histogram(
            "aiops_state_restore_seconds",
            "Time to read and load the checkpoints of newly assigned partitions",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.series_restored = Counter(
            "aiops_state_series_restored",
            "Series whose detector state was restored from a checkpoint",
            registry=r,
        )
        self.signals_forwarded = Counter(
            "aiops_signals_forwarded", "Signals published to the signals topic", registry=r
        )
        self.freshness_published = Counter(
            "aiops_freshness_records_published",
            "Freshness records of signalled series published to the signals topic",
            registry=r,
        )
        self.freshness_received = Counter(
            "aiops_freshness_records_received",
            "Freshness records taken from the signals topic by the deciding side",
            registry=r,
        )
        self.commits = Counter(
            "aiops_commits", "Offset commits after processed batches, by source", ["source"], registry=r
        )
        # playbooks (agent/playbook) and the Alertmanager webhook (agent/sources/alertmanager.py)
        self.playbook_reloads = Counter(
            "aiops_playbook_reloads",
            "Playbook set loads by the watcher, by outcome (loaded | rejected)",
            ["outcome"],
            registry=r,
        )
        self.playbook_errors = Gauge(
            "aiops_playbook_errors",
            "Errors in the last playbook set the watcher read (0 when it loaded)",
            registry=r,
        )
        self.playbooks_loaded = Gauge("aiops_playbooks_loaded", "Playbooks in the running set", registry=r)
        self.playbook_set_loaded_at = Gauge(
            "aiops_playbook_set_loaded_timestamp_seconds",
            "When the running playbook set was loaded",
            registry=r,
        )
        self.incidents_open = Gauge("aiops_incidents_open", "Open playbook incidents", registry=r)
        self.incidents_handed_over = Counter(
            "aiops_incidents_handed_over",
            "Open incidents let go with their signals partition (its new owner goes on with them)",
            registry=r,
        )
        self.incidents_restored = Counter(
            "aiops_incidents_restored",
            "Open incidents taken over with a signals partition from its previous owner",
            registry=r,
        )
        self.incidents_not_restored = Counter(
            "aiops_incidents_not_restored",
            "Handed-over incidents dropped, by reason (incompatible: another version, playbook gone "
            "or changed, damaged; open: the incident is open here already)",
            ["reason"],
            registry=r,
        )
        self.incident_transitions = Counter(
            "aiops_incident_transitions",
            "Incident state changes, by playbook and new state",
            ["playbook", "state"],
            registry=r,
        )
        self.playbook_actions = Counter(
            "aiops_playbook_actions",
            "Action results seen by the playbook engine, by playbook, action and status",
            ["playbook", "action", "status"],
            registry=r,
        )
        self.playbook_signals_rejected = Counter(
            "aiops_playbook_signals_rejected",
            "Matching signals that opened no incident, by playbook and reason (stale | target)",
            ["playbook", "reason"],
            registry=r,
        )
        self.alertmanager_requests = Counter(
            "aiops_alertmanager_requests",
            "Alertmanager webhook requests, by outcome (ok | malformed | too_large | unavailable)",
            ["outcome"],
            registry=r,
        )
        self.alertmanager_alerts = Counter(
            "aiops_alertmanager_alerts",
            "Alerts received from Alertmanager, by status",
            ["status"],
            registry=r,
        )
        self.leader = Gauge(
            "aiops_leader", "1 while this replica holds the executor's leader Lease", registry=r
        )
        self.actions = Counter(
            "aiops_actions_total",
            "Executor decisions on action requests, by action and outcome "
            "(executed | dry_run | skipped | failed | pending_approval | approved | rejected | expired)",
            ["action", "outcome"],
            registry=r,
        )
        self.actions_queued = Gauge(
            "aiops_actions_queued", "Actions waiting for a worker of the action pool", registry=r
        )
        self.actions_running = Gauge(
            "aiops_actions_running", "Actions running on the action pool's workers", registry=r
        )
