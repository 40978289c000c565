-- Local domains added at runtime, as in the SQLite schema (names are stored
-- lower-cased A-labels, so plain TEXT equality is the NOCASE comparison).
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    dkim_selector TEXT NOT NULL,
    added_at TEXT NOT NULL
);
