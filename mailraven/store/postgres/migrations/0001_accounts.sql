-- Accounts, aliases, local domains: the account side of the store.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    quota_bytes BIGINT,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE aliases (
    address TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (address, target)
);
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    selector TEXT NOT NULL,
    added_at TEXT NOT NULL
);
