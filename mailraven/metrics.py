"""Prometheus metrics of one service tree (its own registry, so several trees
can live in one process, as they do in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.smtpSessions = Counter(
            "mailraven_smtp_sessions", "SMTP sessions accepted", registry=r
        )
        self.smtpActive = Gauge(
            "mailraven_smtp_active_sessions", "SMTP sessions open now", registry=r
        )
        self.apiEventStreams = Gauge(
            "mailraven_api_event_streams", "API event streams open now", registry=r
        )
        self.imapActive = Gauge(
            "mailraven_imap_active_sessions", "IMAP sessions open now", registry=r
        )
        self.smtpMessages = Counter(
            "mailraven_smtp_messages",
            "Messages at the end of DATA by result",
            ["result"],
            registry=r,
        )
        self.smtpRejections = Counter(
            "mailraven_smtp_rejections",
            "Rejected SMTP commands by reason",
            ["reason"],
            registry=r,
        )
        self.storeCommitSeconds = Histogram(
            "mailraven_store_commit_seconds",
            "Duration of one group commit on the writer thread",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.storeCommitBatch = Histogram(
            "mailraven_store_commit_batch_size",
            "Writes carried by one group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.storeWorkersReady = Gauge(
            "mailraven_store_workers_ready",
            "Store worker processes ready to take messages",
            registry=r,
        )
        self.diskUsedRatio = Gauge(
            "mailraven_disk_used_ratio", "Used fraction of the data volume", registry=r
        )

        self.backupLastSuccess = Gauge(
            "mailraven_backup_last_success_timestamp_seconds",
            "When the last backup completed",
            registry=r,
        )
        self.backupDuration = Gauge(
            "mailraven_backup_duration_seconds",
            "Duration of the last backup",
            registry=r,
        )
        self.backupBytes = Gauge(
            "mailraven_backup_size_bytes",
            "Message bytes in the last backup",
            registry=r,
        )

        self.dnsQueries = Counter(
            "mailraven_dns_queries",
            "Questions to the server's resolver: cached, sent upstream, or"
            " joined to the same question in flight (shared)",
            ["result"],
            registry=r,
        )
        self.dnsblLookups = Counter(
            "mailraven_dnsbl_lookups",
            "DNSBL lookups by zone and result",
            ["zone", "result"],
            registry=r,
        )
        self.dnsblSeconds = Histogram(
            "mailraven_dnsbl_lookup_seconds",
            "Duration of one DNSBL query",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.dnsblHealthy = Gauge(
            "mailraven_dnsbl_zone_healthy",
            "1 when the zone passes RFC 5782 tests",
            ["zone"],
            registry=r,
        )
        self.spamScore = Histogram(
            "mailraven_spam_score",
            "Spam score of messages at the end of DATA",
            buckets=(-50, 0, 1, 2, 3, 5, 7.5, 10, 15, 50),
            registry=r,
        )
        self.ratelimitHits = Counter(
            "mailraven_ratelimit_hits",
            "Refusals by rate limit",
            ["limit"],
            registry=r,
        )
        self.loginAttempts = Counter(
            "mailraven_login_attempts",
            "Logins by protocol (smtp, api, imap) and outcome"
            " (success, failure, throttled)",
            ["protocol", "outcome"],
            registry=r,
        )
        self.tlsCertExpiry = Gauge(
            "mailraven_tls_cert_expiry_timestamp_seconds",
            "When the certificate served for a name expires",
            ["name"],
            registry=r,
        )
        self.outboundQueueDepth = Gauge(
            "mailraven_outbound_queue_depth",
            "Recipients waiting for delivery (queued or deferred)",
            registry=r,
        )
        self.outboundDeliveries = Counter(
            "mailraven_outbound_deliveries",
            "Delivery attempts by result (delivered, deferred, failed)",
            ["result"],
            registry=r,
        )
        self.outboundRetries = Counter(
            "mailraven_outbound_retries",
            "Recipients deferred for another try",
            registry=r,
        )
        self.acmeOrders = Counter(
            "mailraven_acme_orders",
            "ACME orders by result (issued, renewed, failed)",
            ["result"],
            registry=r,
        )

    def observeCommit(self, seconds: float, batch: int) -> None:
        self.storeCommitSeconds.observe(seconds)
        self.storeCommitBatch.observe(batch)
