"""The series ``ringq.metrics`` and ``ringq.otel`` export, shared by both."""

# (stats key, metric name, help)
_COUNTERS = (
    ("published", "ringq_published", "Messages published (new ids)."),
    ("replaced", "ringq_replaced", "Publishes that replaced a live message (same dedup key)."),
    ("kept", "ringq_kept", "Publishes ignored because the key's message was kept."),
    ("superseded", "ringq_superseded", "In-flight messages superseded by a newer publish."),
    ("superseded_dropped", "ringq_superseded_dropped", "Superseded messages dropped on failure."),
    ("delivered", "ringq_delivered", "Deliveries (checkouts) of messages."),
    ("acked", "ringq_acked", "Messages acked."),
    ("nacked", "ringq_nacked", "Deliveries given back (nack)."),
    ("expired", "ringq_lease_expired", "Leases that ran out."),
    ("dead_lettered", "ringq_dead_lettered", "Messages moved to the dead-letter queue."),
    ("dlq_evicted", "ringq_dlq_evicted", "Dead letters evicted by the dead-letter capacity."),
    ("dlq_replayed", "ringq_dlq_replayed", "Dead letters replayed."),
    ("dlq_purged", "ringq_dlq_purged", "Dead letters purged."),
    ("snapshots", "ringq_snapshots", "Snapshots written."),
    ("fsyncs", "ringq_fsyncs", "Journal fsyncs."),
)
_GAUGES = (
    ("ready", "ringq_ready", "Messages ready for delivery."),
    ("in_flight", "ringq_in_flight", "Messages checked out under a lease."),
    ("delayed", "ringq_delayed", "Messages waiting for their delay or retry backoff."),
    ("dead", "ringq_dead_letters", "Dead letters kept."),
    ("capacity", "ringq_capacity", "Live messages the queue may hold."),
    ("journal_bytes", "ringq_journal_bytes", "Bytes of journal segments on disk."),
    ("journal_segments", "ringq_journal_segments", "Journal segments on disk."),
    ("snapshot_age", "ringq_snapshot_age_seconds", "Seconds since the last snapshot."),
    ("lsn", "ringq_lsn", "Last journal record written."),
    ("snapshot_lsn", "ringq_snapshot_lsn", "Last journal record the newest snapshot covers."),
    ("durable_lsn", "ringq_durable_lsn", "Last journal record known to be on disk."),
    ("recovery_seconds", "ringq_recovery_seconds", "Time the last open spent recovering."),
    ("recovered_records", "ringq_recovered_records", "Records replayed by the last open."),
    ("torn_tail_bytes", "ringq_torn_tail_bytes", "Torn-tail bytes dropped by the last open."),
    ("torn_tails", "ringq_torn_tails", "Torn tails (0 or 1) the last open found and dropped."),
)
_TOPIC_GAUGES = ("ready", "in_flight", "delayed")
_HANDLER_COUNTERS = (
    "processed",
    "succeeded",
    "failed",
    "retried",
    "dead_lettered",
    "undecodable",
    "late_acks",
)
_HANDLER_GAUGES = ("workers", "active", "abandoned_running")
_HANDLER_HISTOGRAMS = (
    ("queue_wait", "Publish to handler start (a retry counts from its first publish)."),
    ("handler_duration", "Time the handler ran, per attempt."),
    ("end_to_end", "First publish to the handler's success (retries included)."),
)
# Engine histograms: (key of Engine.histograms(), metric name, help)
_ENGINE_HISTOGRAMS = (
    ("fsync", "ringq_fsync_seconds", "Journal fsyncs by the flusher."),
    ("snapshot", "ringq_snapshot_seconds", "Snapshot duration: encode, write, fsync, rename."),
)
