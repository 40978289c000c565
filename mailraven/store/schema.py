"""Numbered schema migrations, applied in order at start (PRAGMA user_version)."""

from __future__ import annotations

import os
import sqlite3
from itertools import groupby
from typing import Callable, Iterator

_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2'"
_COLUMNS = ("sender", "recipients", "subject", "body")
# Schemas 9 and 10: the account's id in the high bits of an index rowid, the
# message's search_docs id in the low ones (one range of rowids per account).
_DOC_BITS = 40
_DOC_MASK = (1 << _DOC_BITS) - 1


def _schema9Rowid(userId: int, docId: int) -> int:
    return (userId << _DOC_BITS) | docId


def _tokenInstances(conn: sqlite3.Connection) -> Iterator[tuple[int, dict]]:
    """
    Every document of the contentless C{message_search}, rebuilt from the
    index itself: fts5vocab lists every token instance (document, column,
    position), and the tokens of a column in position order, tokenized
    again, are the same tokens at the same positions. Yields (rowid,
    {column: [tokens]}).
    """
    conn.execute(
        "CREATE VIRTUAL TABLE temp.old_terms"
        " USING fts5vocab(main, message_search, instance)"
    )
    instances = conn.execute(
        'SELECT doc, col, term FROM temp.old_terms ORDER BY doc, col, "offset"'
    )
    for doc, terms in groupby(instances, key=lambda row: row[0]):
        columns: dict[str, list[str]] = {}
        for _, column, term in terms:
            columns.setdefault(column, []).append(term)
        yield doc, columns
    conn.execute("DROP TABLE temp.old_terms")


def _perAccountIndex(conn: sqlite3.Connection) -> None:
    """
    9: one search document per account, in the account's rowid range,
    instead of one per message with the owners as terms (L{_tokenInstances}).
    """
    conn.execute(
        f"CREATE VIRTUAL TABLE message_search_9 USING fts5({', '.join(_COLUMNS)},"
        f" content = '', {_TOKENIZE})"
    )
    insert = (
        f"INSERT INTO message_search_9 (rowid, {', '.join(_COLUMNS)})"
        " VALUES (?, ?, ?, ?, ?)"
    )
    for doc, columns in _tokenInstances(conn):
        text = [" ".join(columns.get(column, ())) for column in _COLUMNS]
        owners = [t[1:] for t in columns.get("owners", ()) if t[1:].isdigit()]
        conn.executemany(
            insert,
            [(_schema9Rowid(int(u), doc), *text) for u in dict.fromkeys(owners)],
        )
    conn.execute("DROP TABLE message_search")
    conn.execute("ALTER TABLE message_search_9 RENAME TO message_search")


def _indexTablePerAccount(conn: sqlite3.Connection) -> None:
    """
    11: each account's documents move from its rowid range of the shared
    index to a table of its own (L{mailraven.store.searchindex} says why),
    keeping their search_docs ids as rowids. Only documents of mail the
    account still has an entry for are carried over: not those of removed
    accounts, even where a later account was given the same id.
    """
    accounts = {row[0] for row in conn.execute("SELECT id FROM users")}
    for userId in accounts:
        conn.execute(
            f"CREATE VIRTUAL TABLE search_u{int(userId)} USING fts5("
            f"{', '.join(_COLUMNS)}, content = '', {_TOKENIZE})"
        )
    owned = {
        (docId, userId)
        for docId, userId in conn.execute(
            "SELECT d.id, e.user_id FROM search_docs d"
            " JOIN mailbox_entries e ON e.message_id = d.message_id"
        )
    }
    for doc, columns in _tokenInstances(conn):
        userId, docId = doc >> _DOC_BITS, doc & _DOC_MASK
        if (docId, userId) not in owned:
            continue
        conn.execute(
            f"INSERT INTO search_u{int(userId)} (rowid, {', '.join(_COLUMNS)})"
            " VALUES (?, ?, ?, ?, ?)",
            (docId, *(" ".join(columns.get(column, ())) for column in _COLUMNS)),
        )
    conn.execute("DROP TABLE message_search")


# 16: the six folders every account has (docs/architecture.md, "Folders").
STANDARD_FOLDERS = (
    ("inbox", "INBOX", None),
    ("sent", "Sent", "\\Sent"),
    ("drafts", "Drafts", "\\Drafts"),
    ("junk", "Junk", "\\Junk"),
    ("trash", "Trash", "\\Trash"),
    ("archive", "Archive", "\\Archive"),
)
_STANDARD_VALUES = ", ".join(
    "('{}', '{}', {})".format(key, name, "NULL" if use is None else f"'{use}'")
    for key, name, use in STANDARD_FOLDERS
)
# A new UIDVALIDITY: past every one handed out before (a folder deleted and
# made again under its name gets a new one, RFC 3501 2.3.1.1) and never below
# the clock, so a database made afresh does not hand out values clients hold.
NEXT_UIDVALIDITY = (
    "UPDATE uidvalidity_serial"
    " SET last = max(last + 1, CAST(strftime('%s', 'now') AS INTEGER))"
)

_FOLDERS_SCHEMA = f"""
    CREATE TABLE uidvalidity_serial (last INTEGER NOT NULL);
    INSERT INTO uidvalidity_serial VALUES (0);
    CREATE TABLE folders (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        name TEXT NOT NULL,
        special_use TEXT,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        highestmodseq INTEGER NOT NULL DEFAULT 1,
        subscribed INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (user_id, mailbox)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX folders_by_name ON folders (user_id, name);
    CREATE TRIGGER account_folders AFTER INSERT ON users BEGIN
        DELETE FROM folders WHERE user_id = NEW.id;
        {NEXT_UIDVALIDITY};
        INSERT INTO folders (user_id, mailbox, name, special_use, uidvalidity)
            SELECT NEW.id, s.column1, s.column2, s.column3, v.last
            FROM (VALUES {_STANDARD_VALUES}) s, uidvalidity_serial v;
    END;
    {NEXT_UIDVALIDITY};
    INSERT INTO folders (user_id, mailbox, name, special_use, uidvalidity)
        SELECT u.id, s.column1, s.column2, s.column3, v.last
        FROM users u, (VALUES {_STANDARD_VALUES}) s, uidvalidity_serial v;
    INSERT OR IGNORE INTO folders (user_id, mailbox, name, uidvalidity)
        SELECT DISTINCT e.user_id, e.mailbox, e.mailbox, v.last
        FROM mailbox_entries e, uidvalidity_serial v;
    ALTER TABLE mailbox_entries ADD COLUMN uid INTEGER;
    ALTER TABLE mailbox_entries ADD COLUMN modseq INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE mailbox_entries ADD COLUMN answered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE mailbox_entries ADD COLUMN draft INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE mailbox_entries ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE mailbox_entries ADD COLUMN keywords TEXT NOT NULL DEFAULT '';
    ALTER TABLE mailbox_entries ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE mailbox_entries SET size = coalesce(
        (SELECT m.size FROM messages m WHERE m.id = mailbox_entries.message_id), 0);
    UPDATE mailbox_entries SET uid = r.n FROM (
        SELECT id, row_number() OVER (
            PARTITION BY user_id, mailbox ORDER BY received_at, id) AS n
        FROM mailbox_entries) r
    WHERE r.id = mailbox_entries.id;
    CREATE INDEX entries_by_uid ON mailbox_entries (user_id, mailbox, uid);
    UPDATE folders SET uidnext = 1 + coalesce((SELECT max(e.uid)
        FROM mailbox_entries e
        WHERE e.user_id = folders.user_id AND e.mailbox = folders.mailbox), 0);
    CREATE TRIGGER entries_enter_folder AFTER INSERT ON mailbox_entries
    WHEN NEW.uid IS NULL BEGIN
        UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
        WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox;
        UPDATE mailbox_entries SET (uid, modseq, size) = (
            SELECT uidnext - 1, highestmodseq,
                coalesce((SELECT size FROM messages WHERE id = NEW.message_id), 0)
            FROM folders WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox)
        WHERE id = NEW.id;
    END;
    CREATE TRIGGER entries_change_folder AFTER UPDATE OF mailbox ON mailbox_entries
    WHEN OLD.mailbox != NEW.mailbox BEGIN
        UPDATE folders SET highestmodseq = highestmodseq + 1
        WHERE user_id = OLD.user_id AND mailbox = OLD.mailbox;
        UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
        WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox;
        UPDATE mailbox_entries SET (uid, modseq) = (
            SELECT uidnext - 1, highestmodseq FROM folders
            WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox)
        WHERE id = NEW.id;
    END;
    CREATE TRIGGER entries_flags_changed
    AFTER UPDATE OF read_state, starred, answered, draft, deleted, keywords
    ON mailbox_entries WHEN OLD.mailbox = NEW.mailbox AND (
        OLD.read_state != NEW.read_state OR OLD.starred != NEW.starred
        OR OLD.answered != NEW.answered OR OLD.draft != NEW.draft
        OR OLD.deleted != NEW.deleted OR OLD.keywords != NEW.keywords) BEGIN
        UPDATE folders SET highestmodseq = highestmodseq + 1
        WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox;
        UPDATE mailbox_entries SET modseq = (
            SELECT highestmodseq FROM folders
            WHERE user_id = NEW.user_id AND mailbox = NEW.mailbox)
        WHERE id = NEW.id;
    END;
    CREATE TRIGGER entries_expunged AFTER DELETE ON mailbox_entries BEGIN
        UPDATE folders SET highestmodseq = highestmodseq + 1
        WHERE user_id = OLD.user_id AND mailbox = OLD.mailbox;
    END;
"""


def _foldersForImap(conn: sqlite3.Connection) -> None:
    """
    16: folders become rows of their own (IMAP, issue 19): per account its
    IMAP name, the C{mailbox} key its entries carry, special use,
    UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ (a per-folder counter: RFC 7162
    asks no more) and subscription; the six standard ones exist for every
    account (a trigger makes them for new ones). Entries gain a UID (per
    folder, from the folder's UIDNEXT, a new one whenever the entry enters a
    folder, so never reused), a MODSEQ, the flags the API had no word for
    (\\Answered, \\Draft, \\Deleted; \\Seen is read_state, \\Flagged starred),
    keywords (space-separated) and the message's size (a copy of
    messages.size: listing a folder then reads the entries alone, 6x faster
    than joining every message row). Triggers keep UID and MODSEQ right
    whoever inserts, moves, flags or deletes an entry: the API's own UPDATEs
    included. Existing mail gets UIDs in arrival order.
    """
    for statement in _statements(_FOLDERS_SCHEMA):
        conn.execute(statement)


MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: users, messages (one row per stored file), mailbox entries (one per
    # recipient). Text UUID keys (time-ordered) without a rowid: one B-tree per
    # table instead of table + key index, fewer pages written per commit.
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        rcpt_to TEXT NOT NULL,
        helo TEXT,
        peer_ip TEXT,
        header_from TEXT,
        header_to TEXT,
        subject TEXT,
        date TEXT,
        message_id TEXT,
        snippet TEXT,
        attachments TEXT NOT NULL DEFAULT '[]',
        has_attachments INTEGER NOT NULL DEFAULT 0,
        spam_score REAL NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE mailbox_entries (
        id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        mailbox TEXT NOT NULL DEFAULT 'inbox',
        read_state INTEGER NOT NULL DEFAULT 0,
        starred INTEGER NOT NULL DEFAULT 0,
        received_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX entries_by_user
        ON mailbox_entries (user_id, mailbox, received_at, id);
    CREATE INDEX entries_by_message ON mailbox_entries (message_id);
    """,
    # 2: the mobile API: delta sync (updated_at), bearer tokens (hashed), the
    # durable outbound queue, and full-text search over every stored message.
    # `owners` holds a token per recipient user ("u<id>"), so a user's search
    # is filtered inside FTS5 instead of by a join over every match.
    # mailbox_counts is kept by triggers: a page's `total` without a count(*).
    """
    ALTER TABLE mailbox_entries ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';
    UPDATE mailbox_entries SET updated_at = received_at;
    CREATE INDEX entries_by_update ON mailbox_entries (user_id, updated_at, id);
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tokens_by_user ON tokens (user_id);
    CREATE TABLE outbound_queue (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        message_id TEXT NOT NULL REFERENCES messages(id),
        mail_from TEXT NOT NULL,
        rcpt_to TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_reply TEXT,
        created_at TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX outbound_by_status ON outbound_queue (status, next_attempt_at);
    CREATE TABLE mailbox_counts (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0,
        unread INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, mailbox)
    ) WITHOUT ROWID;
    INSERT INTO mailbox_counts (user_id, mailbox, total, unread)
        SELECT user_id, mailbox, count(*), sum(read_state = 0)
        FROM mailbox_entries GROUP BY user_id, mailbox;
    CREATE TRIGGER entries_counted_in AFTER INSERT ON mailbox_entries BEGIN
        INSERT INTO mailbox_counts (user_id, mailbox, total, unread)
        VALUES (NEW.user_id, NEW.mailbox, 1, NEW.read_state = 0)
        ON CONFLICT (user_id, mailbox) DO UPDATE
        SET total = total + 1, unread = unread + (NEW.read_state = 0);
    END;
    CREATE TRIGGER entries_counted_out AFTER DELETE ON mailbox_entries BEGIN
        UPDATE mailbox_counts
        SET total = total - 1, unread = unread - (OLD.read_state = 0)
        WHERE user_id = OLD.user_id AND mailbox = OLD.mailbox;
    END;
    CREATE TRIGGER entries_counted_moved AFTER UPDATE OF mailbox, read_state
    ON mailbox_entries BEGIN
        UPDATE mailbox_counts
        SET total = total - 1, unread = unread - (OLD.read_state = 0)
        WHERE user_id = OLD.user_id AND mailbox = OLD.mailbox;
        INSERT INTO mailbox_counts (user_id, mailbox, total, unread)
        VALUES (NEW.user_id, NEW.mailbox, 1, NEW.read_state = 0)
        ON CONFLICT (user_id, mailbox) DO UPDATE
        SET total = total + 1, unread = unread + (NEW.read_state = 0);
    END;
    CREATE VIRTUAL TABLE message_text USING fts5(
        message_id UNINDEXED, owners, sender, recipients, subject, body,
        tokenize = 'unicode61 remove_diacritics 2'
    );
    """,
    # 3: per-account sender lists, trained from the API (spam / not spam)
    """
    CREATE TABLE sender_lists (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        value TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
        PRIMARY KEY (user_id, value)
    ) WITHOUT ROWID;
    """,
    # 4: outbound delivery state per recipient (a message to three domains
    # succeeds, defers and fails independently); next_attempt in Unix seconds.
    """
    CREATE TABLE outbound_recipients (
        queue_id TEXT NOT NULL REFERENCES outbound_queue(id) ON DELETE CASCADE,
        rcpt TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_reply TEXT,
        next_attempt REAL NOT NULL DEFAULT 0,
        delay_notified INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (queue_id, rcpt)
    ) WITHOUT ROWID;
    CREATE INDEX outbound_recipients_due
        ON outbound_recipients (status, next_attempt);
    INSERT INTO outbound_recipients (queue_id, rcpt, updated_at)
        SELECT q.id, j.value, q.created_at
        FROM outbound_queue q, json_each(q.rcpt_to) j;
    """,
    # 5: SPF/DKIM/DMARC results of inbound mail, as JSON {spf, dkim, dmarc}
    """
    ALTER TABLE messages ADD COLUMN auth_results TEXT;
    """,
    # 6: SCRAM-SHA-256 verifiers (salt, StoredKey, ServerKey, iterations) as
    # JSON, set with the password; accounts made before get them at their
    # next password change.
    """
    ALTER TABLE users ADD COLUMN scram TEXT;
    """,
    # 7: MTA-STS policies survive restarts (RFC 8461 5.1: a restart must not
    # open a window for an attacker who blocks the policy fetch)
    """
    CREATE TABLE mta_sts_policies (
        domain TEXT PRIMARY KEY,
        policy TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 8: the search index keeps no copy of the text (contentless FTS5): the
    # message file is the text. Version 2's table stored every body a second
    # time in the database, which was most of what a 64 KB message cost the
    # writer (bench/: 488 -> 278 us per message) and half the database's size.
    # search_docs maps the index's rowids (they grow with arrival) to messages.
    """
    CREATE TABLE search_docs (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE message_search USING fts5(
        owners, sender, recipients, subject, body,
        content = '', tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO search_docs (id, message_id)
        SELECT rowid, message_id FROM message_text;
    INSERT INTO message_search (rowid, owners, sender, recipients, subject, body)
        SELECT rowid, owners, sender, recipients, subject, body FROM message_text;
    DROP TABLE message_text;
    """,
    _perAccountIndex,
    # 10: each index document's arrival time: a search with before:/after:
    # looks it up by the index rowid instead of joining the mailbox entries
    # (which, with BM25 over every match, took 660 ms for a common word at
    # 100k messages; now 23 ms). A copy of messages.received_at on purpose:
    # counting those 33,000 matches through a join with messages took 105 ms
    # instead of 28.
    """
    ALTER TABLE search_docs ADD COLUMN received_at TEXT;
    UPDATE search_docs SET received_at =
        (SELECT m.received_at FROM messages m WHERE m.id = search_docs.message_id);
    """,
    _indexTablePerAccount,
    # 12: the subaddress (plus-address tag) each copy was delivered under,
    # for the API and for filters; NULL for mail to the plain address.
    """
    ALTER TABLE mailbox_entries ADD COLUMN tag TEXT;
    """,
    # 13: aliases (and catch-alls, address "@domain"): one row per member
    # account; removing the account removes it from every alias.
    """
    CREATE TABLE aliases (
        address TEXT NOT NULL COLLATE NOCASE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (address, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX aliases_by_user ON aliases (user_id);
    """,
    # 14: quotas (docs/quotas.md): each account's stored bytes, kept by
    # triggers in the transaction that adds, moves or removes an entry (one
    # copy per account counts; mail in trash does not), its limit (NULL:
    # quota.default, 0: none) and whether the 90 % warning was sent.
    """
    ALTER TABLE users ADD COLUMN quota_limit INTEGER;
    ALTER TABLE users ADD COLUMN quota_used INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN quota_warned INTEGER NOT NULL DEFAULT 0;
    UPDATE users SET quota_used = (
        SELECT coalesce(sum(m.size), 0) FROM mailbox_entries e
        JOIN messages m ON m.id = e.message_id
        WHERE e.user_id = users.id AND e.mailbox != 'trash');
    CREATE TRIGGER quota_counted_in AFTER INSERT ON mailbox_entries
    WHEN NEW.mailbox != 'trash' BEGIN
        UPDATE users SET quota_used = quota_used
            + (SELECT size FROM messages WHERE id = NEW.message_id)
        WHERE id = NEW.user_id;
    END;
    CREATE TRIGGER quota_counted_out AFTER DELETE ON mailbox_entries
    WHEN OLD.mailbox != 'trash' BEGIN
        UPDATE users SET quota_used = max(0, quota_used
            - coalesce((SELECT size FROM messages WHERE id = OLD.message_id), 0))
        WHERE id = OLD.user_id;
    END;
    CREATE TRIGGER quota_counted_moved AFTER UPDATE OF mailbox ON mailbox_entries
    WHEN (OLD.mailbox = 'trash') != (NEW.mailbox = 'trash') BEGIN
        UPDATE users SET quota_used = max(0, quota_used
            + CASE WHEN NEW.mailbox = 'trash' THEN -1 ELSE 1 END
            * (SELECT size FROM messages WHERE id = NEW.message_id))
        WHERE id = NEW.user_id;
    END;
    """,
    # 15: domains added at runtime (mailraven domain add, the admin API),
    # each with the selector of its own DKIM key in data_dir/dkim/<name>/.
    """
    CREATE TABLE domains (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        dkim_selector TEXT NOT NULL,
        added_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    _foldersForImap,
    # 17: entries that are gone (IMAP EXPUNGE, a deleted folder), kept so the
    # API's delta sync can report them; the time has the *_at columns' form
    # (Python's isoformat with microseconds, UTC), so it sorts beside them.
    """
    CREATE TABLE expunged_entries (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        mailbox TEXT NOT NULL,
        expunged_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX expunged_by_user ON expunged_entries (user_id, expunged_at, id);
    CREATE TRIGGER entries_kept_as_expunged AFTER DELETE ON mailbox_entries BEGIN
        INSERT OR REPLACE INTO expunged_entries (id, user_id, mailbox, expunged_at)
        VALUES (
            OLD.id, OLD.user_id, OLD.mailbox,
            strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00'
        );
    END;
    CREATE TRIGGER expunged_of_removed_account AFTER DELETE ON users BEGIN
        DELETE FROM expunged_entries WHERE user_id = OLD.id;
    END;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer MailRaven; refuse rather than damage it."""


def schemaVersionOf(path: str) -> int:
    """The schema version of the database at C{path}; 0 when there is none."""
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """
    Bring the schema to C{target} (normally L{SCHEMA_VERSION}; tests stop
    earlier to build an old database); each step is one transaction.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema {current} is newer than this MailRaven ({SCHEMA_VERSION})"
        )
    for number in range(current + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = MIGRATIONS[number - 1]
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return max(current, target)


def _statements(script: str) -> list[str]:
    """Split on semicolons that end a statement (not those inside a trigger)."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
