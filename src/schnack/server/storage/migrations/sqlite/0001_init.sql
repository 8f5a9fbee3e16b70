CREATE TABLE accounts (
    host TEXT NOT NULL, username TEXT NOT NULL, credentials TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (host, username)
);
CREATE TABLE roster_versions (host TEXT NOT NULL, username TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (host, username));
CREATE TABLE roster (
    host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL, name TEXT, subscription TEXT NOT NULL,
    ask INTEGER NOT NULL, approved INTEGER NOT NULL, groups TEXT NOT NULL,
    PRIMARY KEY (host, username, jid)
);
CREATE TABLE kv (host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (host, username, store));
CREATE TABLE maps (host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL,
    value BLOB NOT NULL, PRIMARY KEY (host, username, store, key));
CREATE TABLE archive (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, host TEXT NOT NULL, username TEXT NOT NULL,
    store TEXT NOT NULL, timestamp REAL NOT NULL, with_jid TEXT NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX archive_by_user ON archive (host, username, store, seq);
CREATE INDEX archive_by_with ON archive (host, username, store, with_jid, seq);
