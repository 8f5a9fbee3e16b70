CREATE TABLE accounts (
    host TEXT NOT NULL, username TEXT NOT NULL, credentials JSONB NOT NULL, created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, username)
);
CREATE TABLE roster_versions (host TEXT NOT NULL, username TEXT NOT NULL, version BIGINT NOT NULL,
    PRIMARY KEY (host, username));
CREATE TABLE roster (
    host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL, name TEXT, subscription TEXT NOT NULL,
    ask BOOLEAN NOT NULL, approved BOOLEAN NOT NULL, groups TEXT[] NOT NULL,
    PRIMARY KEY (host, username, jid)
);
CREATE TABLE kv (host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, value BYTEA NOT NULL,
    PRIMARY KEY (host, username, store));
CREATE TABLE maps (host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL,
    value BYTEA NOT NULL, PRIMARY KEY (host, username, store, key));
-- seq is the paging order (RSM); id is the opaque handle clients see.
CREATE TABLE archive (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, host TEXT NOT NULL, username TEXT NOT NULL,
    store TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL, with_jid TEXT NOT NULL, payload BYTEA NOT NULL
);
CREATE INDEX archive_by_user ON archive (host, username, store, seq);
CREATE INDEX archive_by_with ON archive (host, username, store, with_jid, seq);
