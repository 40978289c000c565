"""The contracts between MailRaven's parts.

Every adapter (SQLite now, PostgreSQL + object storage later) and every fake in
L{mailraven.testing} provides these; tests check them with C{verifyObject}.
"""

from zope.interface import Attribute, Interface


class IMessageStore(Interface):
    """
    Durable message storage.

    A Deferred from L{deliver} fires only once the message file and its rows are
    on stable storage: a caller may acknowledge the message (SMTP 250) then.
    """

    def deliver(envelope, spool):
        """
        Store one message for every recipient of C{envelope}.

        @param envelope: a L{mailraven.envelope.Envelope}.
        @param spool: a L{mailraven.spool.Spool} holding the raw message bytes
            (header lines we prepend included); the store owns it afterwards.
        @return: Deferred firing with the message id (a UUID string), or failing;
            on failure nothing of the message is visible.
        """

    def get(entryId, userId):
        """
        Deferred firing with the mailbox entry (a dict, see L{list}) plus
        C{"raw"}: the message bytes, or None if it is not that user's.
        """

    def list(userId, mailbox, limit, offset):
        """
        Deferred firing with a list of mailbox entries (dicts), newest first.
        """

    def updateFlags(entryId, userId, flags):
        """
        Deferred firing with True when C{flags} (a dict with any of
        C{read_state}, C{starred}, C{mailbox}) were applied, False if no such entry.
        """

    def delete(entryId, userId):
        """
        Deferred firing with True when the entry was moved to C{trash}.
        """


class IChangeFeed(Interface):
    """
    Per-account news that an account's mail changed, for IMAP IDLE and the
    API's event stream. A change carries its account and kind only
    (C{new}, C{flags}, C{moved}, C{expunged}, C{folders}); subscribers read
    the store for what changed. Listeners run on the reactor thread.
    """

    def subscribe(userId, listener):
        """Call C{listener(change)} on each later change of C{userId}'s mail;
        C{change} has C{userId} and C{kind}."""

    def unsubscribe(userId, listener):
        """Stop calling C{listener}; unknown listeners are ignored."""

    def publish(userId, kind):
        """Tell C{userId}'s listeners of a change of C{kind} (ValueError for an
        unknown kind). A listener's failure is logged, not raised."""

    def subscribers(userId):
        """How many listeners C{userId} has."""


class IUserStore(Interface):
    """
    Mail accounts. Addresses are compared case-insensitively.
    """

    def add(email, password, admin=False):
        """Deferred firing with the new user's id; fails with L{UserExists}.
        An C{admin} account may use the admin API and receives role mail."""

    def setPassword(email, password):
        """Deferred firing with True if the user existed."""

    def remove(email):
        """Deferred firing with True if the user existed."""

    def lookup(email):
        """Deferred firing with the user's id, or None when there is no such user."""

    def scramCredentials(email):
        """
        Deferred (salt, StoredKey, ServerKey, iterations) for SCRAM-SHA-256,
        or None (no such account, or no verifier yet).
        """

    def authenticate(email, password):
        """Deferred firing with the user's id when the password matches, else None."""

    def listUsers():
        """Deferred firing with a list of addresses."""

    def domains():
        """Deferred firing with the set of domains that have at least one user."""

    def directory():
        """Deferred firing with {lower-cased address: user id} of every account."""

    def admins():
        """Deferred firing with the ids of the admin accounts, oldest first."""


class IAliasStore(Interface):
    """
    Aliases: an address of a local domain delivered to one or more accounts,
    and per-domain catch-alls (the address C{"@domain"}). Members are always
    accounts of this server; addresses compare case-insensitively.
    """

    def add(address, members):
        """
        Add the accounts C{members} to the alias C{address} (made if new);
        Deferred firing with the alias's address (normalised; as first
        spelled when the alias existed). Fails, adding nothing,
        with L{mailraven.store.aliases.UnknownMember} when a member is not an
        account, L{mailraven.store.aliases.AliasIsAccount} when C{address}
        is one, or L{mailraven.store.users.BadAddress}.
        """

    def remove(address, members=()):
        """
        Remove the alias, or only the accounts C{members} from it (it is gone
        with its last member); Deferred firing with True if anything was
        removed.
        """

    def list():
        """Deferred firing with {alias: [member addresses]}, sorted."""

    def directory():
        """Deferred firing with {lower-cased alias: [member user ids]}."""


class IQuotaStore(Interface):
    """
    Per-account storage quotas: bytes stored for the account (one count per
    copy; trash excluded) against its own limit or the configured default.
    """

    def quota(email):
        """Deferred firing with (bytes used, own limit or None), or None when
        there is no such account."""

    def setLimit(email, limit):
        """Set the account's own limit in bytes (0: unlimited; None: back to
        quota.default); Deferred firing with True if the account exists."""

    def directory():
        """Deferred firing with {user id: (bytes used, own limit or None)}."""

    def claimWarnings(default):
        """
        Deferred firing with [(user id, address, used, limit)] of the accounts
        at or past 90 % of their limit (C{default}: quota.default) that were
        not warned since they last were below it; each is returned once.
        """


class IDomainStore(Interface):
    """
    Local domains added at runtime, each with the selector of its own DKIM
    key. Names are lower-cased without a trailing dot; a domain listed in
    C{server.domains} is local whether or not it is here.
    """

    def add(name, selector):
        """
        Deferred firing with the new L{mailraven.store.domains.Domain}; fails
        with L{mailraven.store.domains.DomainExists} or
        L{mailraven.store.domains.BadDomain}, adding nothing.
        """

    def remove(name):
        """
        Deferred firing with True if the domain was there; fails with
        L{mailraven.store.domains.DomainInUse} (naming how many accounts and
        aliases) while any account or alias of the domain exists.
        """

    def list():
        """Deferred firing with every L{mailraven.store.domains.Domain}, by name."""

    def names():
        """Deferred firing with the frozenset of names: what the resolver holds."""


class IOutboundQueueStore(Interface):
    """
    The durable state of outbound delivery: recipients still 'queued' or
    'deferred', each with the time of its next attempt. Entries are queued
    with the message that is sent (L{IMessageStore.deliver}).
    """

    def nextDue():
        """Deferred firing with the earliest next attempt time, or None."""

    def due(now, limit):
        """
        Deferred firing with at most C{limit}
        L{mailraven.outbound.state.DueRecipient}s whose attempt time is at
        or before C{now}, earliest first.
        """

    def pendingCount():
        """Deferred firing with how many recipients are queued or deferred."""

    def record(outcomes):
        """
        Deferred firing once every L{mailraven.outbound.state.Outcome} is
        stored (status, reply, one more attempt, next attempt) and each
        touched entry's summary status follows its recipients.
        """

    def markDelayNotified(queueId, rcpts):
        """Deferred firing once the recipients are marked as told of delay."""


class ISenderListStore(Interface):
    """
    Each account's trained sender lists: addresses or domains it marked as
    spam ('block') or not ('allow'), which then decide junk or inbox for it.
    """

    def lists():
        """Deferred firing with {user id: {sender or domain: kind}}."""

    def train(userId, sender, kind):
        """
        Deferred firing once C{sender} (lower-cased) is listed as C{kind}
        for the account, replacing what it was.
        """


class IMTASTSPolicyCache(Interface):
    """
    The last MTA-STS policy fetched for each recipient domain, kept so an
    enforced policy outlives a restart during which it cannot be fetched
    (RFC 8461 5.1). Domains are as the queue names them.
    """

    def load(domain):
        """
        Deferred firing with the L{mailraven.outbound.mtasts.STSPolicy} last
        saved for C{domain}, expired or not, or None.
        """

    def save(domain, policy):
        """Deferred firing once C{policy} replaces what C{domain} had."""


class IFolderStore(Interface):
    """
    An account's folders as IMAP sees them (RFC 3501, UIDPLUS, MOVE,
    CONDSTORE), over the same entries the mobile API shows. Folders are
    named by their IMAP name (Unicode; INBOX in any case); C{uids} is a
    UID set, a sequence of (low, high) pairs with None for "*" (helpers in
    L{mailraven.store.folders}: L{resolveUidSet}, L{sequenceUids},
    L{uidsIn}). Every operation on a folder the account does not have fails
    with L{mailraven.store.folders.NoSuchFolder}; the other failures are
    L{mailraven.store.folders.FolderError}s too.

    UIDs are assigned when a message enters a folder (delivered, appended,
    copied, moved), from the folder's UIDNEXT, and are never handed out
    twice in a folder; every change to a message gives it a new MODSEQ
    above the folder's HIGHESTMODSEQ, whichever view made the change.
    """

    def folders(userId):
        """
        Deferred list of L{mailraven.store.folders.Folder} (name, mailbox
        key, special use, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, subscribed,
        total, unseen): INBOX first, then by name. Every account has INBOX,
        Sent, Drafts, Junk, Trash and Archive from the start.
        """

    def folder(userId, name):
        """Deferred L{mailraven.store.folders.Folder}, or None."""

    def create(userId, name):
        """
        Deferred new (unsubscribed) Folder; missing superior names
        ("a" of "a/b") are created too. Fails with FolderExists,
        BadFolderName (also for a level with a leading or trailing space, or
        one that is "." or "..") or FolderLimit (past 1000 folders in the
        account, superiors counted; a rename's new superiors too).
        """

    def rename(userId, old, new):
        """
        Deferred None. Inferior names follow; mail, UIDs and UIDVALIDITY
        stay with the folder. Renaming INBOX moves its mail to a new folder
        C{new} (new UIDs) and INBOX stays. Fails with FolderExists,
        FolderRefused (a special-use folder keeps its name) or BadFolderName
        (C{new} as for create, or an inferior's new name past 200
        characters), changing nothing.
        """

    def delete(userId, name):
        """
        Deferred count of messages removed with the folder (its mail goes
        with it, RFC 3501 6.3.4). INBOX and the special-use folders fail
        with FolderRefused.
        """

    def subscribe(userId, name, subscribed=True):
        """Deferred None; C{subscribed=False} unsubscribes."""

    def messages(userId, name, uids=None):
        """
        Deferred list of L{mailraven.store.folders.FolderMessage} (uid, entry
        id, system flags, keywords, modseq, size, internal date) in UID
        order: all of the folder's, or those C{uids} names.
        """

    def search(userId, name, field, text):
        """
        Deferred set of the UIDs in the folder whose C{field} holds C{text}
        (L{mailraven.store.foldersearch}): C{"subject"}, C{"from"}, C{"to"}:
        a case-insensitive substring of the decoded header value; C{"text"},
        C{"body"}: a word of the search index beginning with C{text}, which
        must be one word (L{mailraven.store.foldersearch.isIndexWord}), else
        ValueError. Reads no message file.
        """

    def setFlags(userId, name, uids, flags, mode, unchangedSince=None):
        """
        Add, remove or replace (C{mode}) C{flags} (system flags, any case,
        and keywords) on the messages C{uids} names. With C{unchangedSince}
        (CONDSTORE), messages whose MODSEQ is above it are left alone.
        Deferred L{mailraven.store.folders.FlagChange}: {uid: new MODSEQ} of
        those changed, and those left alone. Fails with BadFlag (\\Recent,
        unknown system flags, keywords that are not atoms; KeywordLimit: a
        keyword over 64 characters, or adding one past 100 distinct in the
        account), changing nothing, even when C{uids} names no message.
        """

    def copy(userId, name, uids, destination):
        """
        Copy the messages (flags and internal date kept) to C{destination};
        Deferred [(old UID, new UID)] in old UID order (UIDPLUS COPYUID).
        """

    def move(userId, name, uids, destination):
        """
        Move the messages (RFC 6851); Deferred [(old UID, new UID)]. Moving
        into the folder they are in fails with FolderRefused.
        """

    def moveEntry(userId, entryId, mailbox):
        """
        Move one message, named by its entry id (the mobile API's), into
        the folder whose mailbox key is C{mailbox}, as MOVE would: a new UID
        from that folder. Deferred UID it has there (unchanged when it is
        there already), or None when the account has no such entry; fails
        with NoSuchFolder when the account has no folder with that key.
        """

    def expunge(userId, name, uids=None):
        """
        Remove the folder's messages flagged \\Deleted (only those C{uids}
        names: UID EXPUNGE); Deferred list of their UIDs, ascending.
        """


class IPolicyCheck(Interface):
    """
    One check of a stage of the acceptance chain (today the DATA stage:
    SPF/DKIM/DMARC, L{mailraven.policy.pipeline}).
    """

    name = Attribute("Short name used in logs and metrics labels.")

    def check(subject):
        """
        Deferred firing with a L{mailraven.policy.pipeline.Verdict}; never
        blocks and never fails for a property of the message (a check that
        cannot decide says so in its results, not with an error).

        @param subject: for the DATA stage, the transaction: C{envelope} (the
            check may record results on it) and C{spool} (the message).
        """


class ILoginLimiter(Interface):
    """
    The one limit on password guessing, shared by every login path. Called on
    the reactor thread only; every call is immediate (no Deferreds).
    """

    def reserve(ip, login, protocol):
        """
        Reserve one attempt before its password is checked: a ticket with
        C{succeeded()} and C{failed()} (the latter returns the seconds to wait
        before answering), or a C{Throttled} with C{scope} and C{retryAfter}
        seconds. Attempts in flight count against the budget.
        """

    def prune():
        """Forget what has aged out (called by a timer)."""


class IDiskGuard(Interface):
    """
    Knows how full the data volume is, without touching the disk on the caller's
    thread.
    """

    def acceptingMail():
        """True while new mail may be accepted (below the reject threshold)."""

    def status():
        """A dict: C{used_percent}, C{free_bytes}, C{state} (ok|warn|full)."""


class ICertificateManager(Interface):
    """
    The certificates this server presents, from operator files, ACME or a
    self-signed fallback, in that order of preference.
    """

    def serverCreator():
        """
        An C{IOpenSSLServerConnectionCreator} choosing the certificate by SNI
        (the default one without SNI or for an unknown name).
        """

    def certificateFor(name):
        """The L{ServedCertificate} a client asking for C{name} gets."""

    def install(key, certificate):
        """Serve C{certificate} (from ACME) under C{key}; new handshakes use it."""

    def status():
        """A list of dicts: names, source, not_after, serial, last_error."""
