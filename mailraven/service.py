"""The whole MailRaven service tree, built in one place.

The twistd plugin and an operator's .tac file both call L{makeService}.
Children start in the order added and stop in reverse, one after another:
listeners go first, SMTP sessions drain, then the store closes.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from mailraven.api.health import HealthResource
from mailraven.api.mobile import AdminAPI, MobileAPI
from mailraven.api.queries import sentToday
from mailraven.api.site import makeSite
from mailraven.api.stspolicy import (
    PolicyResource,
    announce,
    mountPolicy,
    policyFromConfig,
)
from mailraven.api.tokencache import TokenCache
from mailraven.backupservice import BackupJobs
from mailraven.changes import ChangeFeed, PublishingStore
from mailraven.config import Config
from mailraven.diskguard import DiskGuard
from mailraven.dnsresolver import ResolverService, makeResolver
from mailraven.imap.mailbox import IMAPAccount
from mailraven.imap.service import makeIMAPService
from mailraven.listeners import Listener
from mailraven.logs import makeObserver
from mailraven.metrics import Metrics
from mailraven.outbound.dkimsign import DKIMSigner
from mailraven.outbound.mtasts import MTASTS, trustRootFrom
from mailraven.outbound.mx import MXResolver
from mailraven.outbound.queue import OutboundQueue, queueSettings
from mailraven.policy.scoring import SpamScorer
from mailraven.policy.service import PolicyService
from mailraven.quotawarning import QuotaWarningService
from mailraven.smtp.recipients import RecipientResolver
from mailraven.smtp.server import MailRavenSMTPFactory, SMTPSettings
from mailraven.smtp.submission import (
    SubmissionSMTPFactory,
    headerBlock,
    submittedSenders,
)
from mailraven.spool import MemoryBudget, Spool
from mailraven.startup import lockDataDir, prepareDataDir
from mailraven.store.aliases import SQLiteAliasStore
from mailraven.store.backend import requireSupportedBackend
from mailraven.store.db import Database
from mailraven.store.domains import SQLiteDomainStore, domainSelector
from mailraven.store.files import SYNCER, Syncer
from mailraven.store.folders import SQLiteFolderStore
from mailraven.store.messages import SQLiteMessageStore
from mailraven.store.mtasts import SQLiteMTASTSPolicyCache
from mailraven.store.outbound import SQLiteOutboundQueueStore
from mailraven.store.purge import removeFiles
from mailraven.store.quotas import SQLiteQuotaStore
from mailraven.store.users import SQLiteUserStore
from mailraven.store.worker import WorkerSettings
from mailraven.store.workers import StoreWorkers
from mailraven.threads import ThreadPoolService
from mailraven.tls.challenges import HTTP01Responder, mountResponder
from mailraven.tls.service import makeAcmeService, makeCertificateManager


class SMTPService(MultiService):
    """SMTP listeners; on stop, in-flight messages may finish for C{grace} s."""

    def __init__(self, factory: MailRavenSMTPFactory, grace: float) -> None:
        super().__init__()
        self.factory = factory
        self._grace = grace

    @inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.factory.drain(self._grace)


GC_YOUNG_THRESHOLD = 10_000


def _settleGarbageCollector() -> None:
    """
    Everything built at start (modules, the service tree, configuration)
    lives as long as the process: freezing it keeps the collector's full
    passes from walking it again, which paused every thread for 56-84 ms a
    few times a minute under API load (bench/api.py, gc.callbacks). A larger
    young generation makes the frequent young passes rarer: a request or a
    message makes thousands of short-lived objects.
    """
    if gc.get_freeze_count():
        return  # once per process (a test run starts many servers)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class MailRavenService(MultiService):
    log = Logger()

    def __init__(
        self, config: Config, logObserver: Any = None, reactor: Any = None
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.logObserver = logObserver

    def setServiceParent(self, parent: Any) -> None:
        # twistd (and a .tac) read the application's ILogObserver after the
        # plugin returned its service: this is where log.format can take effect.
        if (
            self.logObserver is not None
            and isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver) is None
        ):
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        # after the reactor runs, in its first turn: twistd installs the
        # SIGTERM handler when the reactor starts, and a collection here
        # (0.3 s on a slow machine) would widen the window in which a
        # SIGTERM still ends the process without a clean stop
        reactor = self.reactor
        reactor.callWhenRunning(reactor.callLater, 0, _settleGarbageCollector)

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        for child in reversed(list(self)):
            yield child.stopService()
        self.log.info("mailraven stopped", event="stopped")

    def listeners(self) -> list[Listener]:
        names = [
            n
            for n in ("smtp", "submission", "imap", "api", "acme")
            if n in self.namedServices
        ]
        return [
            listener
            for name in names
            for listener in self.getServiceNamed(name)
            if isinstance(listener, Listener)
        ]


def makeService(
    config: Config,
    reactor: Any = None,
    onListenFailure: Callable[[str], None] | None = None,
    configFile: str | None = None,
    syncer: Syncer = SYNCER,
) -> MailRavenService:
    requireSupportedBackend(config)
    if reactor is None:
        from twisted.internet import reactor
    dataDir = config.dataDir
    lock = lockDataDir(dataDir)  # released last, when the tree has stopped
    try:
        prepareDataDir(dataDir)
    except BaseException:
        lock.release()
        raise
    metrics = Metrics()
    root = MailRavenService(
        config, makeObserver(config["log.format"], config["log.level"]), reactor
    )
    root.metrics = metrics
    lock.setName("lock")
    lock.setServiceParent(root)
    # one cached resolver for DNSBL, mail-auth, MX and MTA-STS; stops last
    dns = ResolverService(
        makeResolver(config["dns.nameservers"], config["dns.timeout"], reactor, metrics)
    )
    dns.setServiceParent(root)
    resolver = dns.resolver

    db = Database(
        os.path.join(dataDir, "mailraven.db"),
        reactor,
        onCommit=metrics.observeCommit,
        syncer=syncer,
    )
    db.setName("db")
    db.setServiceParent(root)
    files = ThreadPoolService(config["store.threads"], "mailraven-files")
    files.setName("files")
    files.setServiceParent(root)
    diskGuard = DiskGuard(
        dataDir,
        config["store.disk_warn_percent"],
        config["store.disk_reject_percent"],
        metrics,
    )
    diskGuard.setName("disk")
    diskGuard.setServiceParent(root)
    certificates = makeCertificateManager(config, reactor, metrics, files.pool)
    certificates.setServiceParent(root)
    root.certificates = certificates
    tlsCreator = certificates.serverCreator()

    scorer = SpamScorer(
        config["spam.junk_score"],
        config["spam.reject_score"],
        config["spam.allowlist"],
        config["spam.blocklist"],
        metrics,
    )
    workers = None
    if config["store.workers"]:
        workers = StoreWorkers(
            config["store.workers"],
            WorkerSettings(
                dataDir,
                db.path,
                config["store.compression_level"],
                scorer.detached(),
                syncer,
            ),
            reactor,
            onCommit=db.reportCommit,
            readyGauge=metrics.storeWorkersReady,
        )
        workers.setName("workers")
        workers.setServiceParent(root)
    root.store = SQLiteMessageStore(
        db,
        dataDir,
        reactor,
        files.pool,
        config["store.compression_level"],
        scorer,
        workers,
        syncer,
    )
    tokens = TokenCache(reactor)
    root.users = SQLiteUserStore(db, onRevoke=tokens.clear)
    root.aliases = SQLiteAliasStore(db)
    root.quotas = SQLiteQuotaStore(db)
    root.domains = SQLiteDomainStore(db)
    root.folders = SQLiteFolderStore(
        db,
        lambda paths: deferToThreadPool(
            reactor, files.pool, removeFiles, dataDir, paths
        ),
    )
    # every change of an account's mail is published for IDLE and /events
    root.changes = ChangeFeed()
    notifying = PublishingStore(root.store, root.changes)
    tmpDir = os.path.join(dataDir, "tmp")
    root.spoolBudget = spoolBudget = MemoryBudget(config["smtp.spool_memory"])

    def discardSpool(spool: Spool) -> None:
        d = deferToThreadPool(reactor, files.pool, spool.discard)
        d.addErrback(lambda f: root.log.failure("discarding spool failed", f))

    policy = PolicyService(config, reactor, metrics, resolver)
    policy.setName("policy")
    policy.setServiceParent(root)
    root.policy = policy
    smtpArgs = dict(
        settings=SMTPSettings(
            hostname=config["server.hostname"],
            maxMessageSize=config["smtp.max_message_size"],
            maxRecipients=config["smtp.max_recipients"],
            maxSessions=config["smtp.max_sessions"],
            timeout=config["smtp.timeout"],
        ),
        resolver=RecipientResolver(
            root.users,
            config["server.domains"],
            reactor,
            postmaster=config["server.postmaster"],
            delimiter=config["server.recipient_delimiter"],
            aliases=root.aliases,
            quotas=root.quotas,
            defaultQuota=config["quota.default"],
            domainStore=root.domains,
        ),
        store=notifying,
        spoolFactory=lambda: Spool(tmpDir, reactor, files.pool, budget=spoolBudget),
        discardSpool=discardSpool,
        diskGuard=diskGuard,
        metrics=metrics,
        tlsContext=tlsCreator,
        clock=reactor,
    )
    mx = MXResolver(resolver)
    for name, factory in (
        (
            "smtp",
            MailRavenSMTPFactory(
                **smtpArgs,
                policy=policy.mx,
            ),
        ),
        (
            "submission",
            SubmissionSMTPFactory(
                **smtpArgs,
                policy=policy.submission,
                users=root.users,
                sentToday=lambda userId: db.read(lambda conn: sentToday(conn, userId)),
                outboundPerDay=config["ratelimit.outbound_per_day"],
                logins=policy.logins,
                aliases=config["submission.aliases"],
                headerSenders=lambda spool: spool.finished().addCallback(
                    lambda _: deferToThreadPool(
                        reactor,
                        files.pool,
                        lambda: submittedSenders(headerBlock(spool.chunks())),
                    )
                ),
            ),
        ),
    ):
        service = SMTPService(factory, config["smtp.shutdown_grace"])
        service.setName(name)
        service.setServiceParent(root)
        for description in config[f"{name}.listen"]:
            Listener(
                reactor,
                description,
                factory,
                onListenFailure,
                tlsCreator,
                key=f"{name}.listen",
            ).setServiceParent(service)

    makeIMAPService(
        config,
        reactor,
        users=root.users,
        logins=policy.logins,
        accounts=lambda userId, email: IMAPAccount(
            root.folders,
            notifying,
            userId,
            email,
            discard=discardSpool,
            quotas=root.quotas,
            defaultQuota=config["quota.default"],
            changes=root.changes,
            reserve=smtpArgs["resolver"].reserve,
        ),
        spoolFactory=smtpArgs["spoolFactory"],
        discardSpool=discardSpool,
        tlsCreator=tlsCreator,
        onListenFailure=onListenFailure,
        metrics=metrics,
        changes=root.changes,
    ).setServiceParent(root)

    backups = BackupJobs(
        dataDir,
        config["backup.dir"] or os.path.join(dataDir, "backups"),
        config["backup.schedule"],
        config["backup.keep"],
        metrics,
        reactor,
        configFile,
    )
    backups.setName("backup")
    backups.setServiceParent(root)
    root.backups = backups
    root.quotaWarnings = QuotaWarningService(
        root.quotas,
        notifying,
        config["quota.default"],
        config["server.hostname"],
        reactor,
    )
    root.quotaWarnings.setName("quotawarnings")
    root.quotaWarnings.setServiceParent(root)
    health = HealthResource(
        reactor,
        files.pool,
        tmpDir,
        diskGuard,
        root.listeners,
        {
            "backup": backups.health,
            "dnsbl": policy.health,
            "tls": certificates.health,
            **({"workers": workers.health} if workers is not None else {}),
        },
    )
    api = MultiService()
    api.setName("api")
    api.setServiceParent(root)
    apiArgs = (
        db,
        notifying,
        dataDir,
        config["server.hostname"],
        reactor,
        files.pool,
        config["api.rate_limit"],
        config["ratelimit.outbound_per_day"],
    )
    mobile = MobileAPI(
        *apiArgs,
        tokens=tokens,
        users=root.users,
        logins=policy.logins,
        recipients=smtpArgs["resolver"],
        quotas=root.quotas,
        defaultQuota=config["quota.default"],
        folders=root.folders,
        changes=root.changes,
        events=dict(
            heartbeat=config["api.events_heartbeat"],
            perAccount=config["api.events_per_account"],
            total=config["api.events_max"],
            gauge=metrics.apiEventStreams,
        ),
    )
    site = makeSite(
        health,
        metrics,
        mobile.resource(),
        AdminAPI(
            *apiArgs,
            backups=backups,
            tokens=tokens,
            recipients=smtpArgs["resolver"],
            quotas=root.quotas,
            defaultQuota=config["quota.default"],
            domains=root.domains,
            aliases=root.aliases,
            config=config,
        ).resource(),
        config["api.max_body"],
    )
    responder = root.challenges = HTTP01Responder()
    mountResponder(site.resource, responder)
    ownPolicy = policyFromConfig(config)
    mountPolicy(site.resource, PolicyResource(ownPolicy, config["server.domains"]))
    announce(ownPolicy, config["server.domains"])
    for description in config["api.listen"]:
        Listener(
            reactor, description, site, onListenFailure, tlsCreator, key="api.listen"
        ).setServiceParent(api)
    mobile.events.setServiceParent(api)  # after the listeners: stopped first
    outbound = OutboundQueue(
        SQLiteOutboundQueueStore(db),
        notifying,
        smtpArgs["resolver"],
        mx,
        DKIMSigner(
            os.path.join(dataDir, "dkim"),
            config["server.domains"],
            lambda domain: db.readHere(lambda conn: domainSelector(conn, domain)),
        ),
        dataDir,
        files.pool,
        reactor,
        queueSettings(config),
        metrics,
        mtasts=MTASTS(
            lambda: resolver,
            reactor,
            trustRootFrom(config["queue.ca_bundle"]),
            config["queue.mta_sts_port"],
            SQLiteMTASTSPolicyCache(db),
        )
        if config["queue.mta_sts"]
        else None,
    )
    outbound.setName("queue")
    outbound.setServiceParent(root)
    root.store.onOutbound = outbound.kick
    root.outbound = outbound
    if config["acme.enabled"]:
        makeAcmeService(
            config, certificates, responder, reactor, metrics, onListenFailure
        ).setServiceParent(root)
    return root
