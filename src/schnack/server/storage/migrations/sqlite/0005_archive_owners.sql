-- Each archive (host, username, store) gets a number, and the archive's rows and indexes carry that
-- number instead of the three strings: every row appended writes an entry into each of the three
-- per-archive indexes, and with the strings in their keys that was most of SQLite's work per
-- message (docs/benchmarks.md, "Archive rows keyed by a number"). Numbers are not reused
-- (AUTOINCREMENT), so a row left by an archive that is gone can never show in another's.
CREATE TABLE archive_owners (
    owner INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL,
    UNIQUE (host, username, store)
);
INSERT INTO archive_owners (host, username, store)
    SELECT DISTINCT host, username, store FROM archive ORDER BY host, username, store;

CREATE TABLE archive_by_owner (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner INTEGER NOT NULL,
    timestamp REAL NOT NULL, with_jid TEXT NOT NULL, payload BLOB NOT NULL
);
INSERT INTO archive_by_owner (seq, id, owner, timestamp, with_jid, payload)
    SELECT a.seq, a.id, o.owner, a.timestamp, a.with_jid, a.payload
    FROM archive AS a JOIN archive_owners AS o USING (host, username, store) ORDER BY a.seq;
-- Carry the old table's counter over, so that the seq of a row deleted at the archive's end is
-- not handed out again.
DELETE FROM sqlite_sequence WHERE name = 'archive_by_owner';
INSERT INTO sqlite_sequence (name, seq) SELECT 'archive_by_owner', seq FROM sqlite_sequence WHERE name = 'archive';

CREATE TABLE archive_counts_by_owner (owner INTEGER PRIMARY KEY, items INTEGER NOT NULL);
INSERT INTO archive_counts_by_owner
    SELECT o.owner, c.items FROM archive_counts AS c JOIN archive_owners AS o USING (host, username, store);

DROP TRIGGER archive_uncounted;
DROP TABLE archive_counts;
DROP TABLE archive;
ALTER TABLE archive_by_owner RENAME TO archive;
ALTER TABLE archive_counts_by_owner RENAME TO archive_counts;

-- The same three indexes as before (migrations 0001 and 0002), each led by the archive's number.
CREATE INDEX archive_by_user ON archive (owner, seq, timestamp);
CREATE INDEX archive_by_with ON archive (owner, with_jid, seq, timestamp);
CREATE INDEX archive_by_time ON archive (owner, timestamp);

-- As in 0004; the counted stores are the only ones with a row in archive_counts, so the trigger
-- finds nothing to change for the others (a lookup by primary key).
CREATE TRIGGER archive_uncounted AFTER DELETE ON archive BEGIN
    UPDATE archive_counts SET items = items - 1 WHERE owner = OLD.owner;
    DELETE FROM archive_counts WHERE owner = OLD.owner AND items = 0;
END;
