-- The number of items in each offline store (XEP-0160; storage.base.BOUNDED_STORES): the store's
-- limit is checked on every message it takes, and counting the index entries of a full one
-- (10,000 items) cost more than everything else done for the message. The transaction that
-- appends counts the item (storage's Archive, the only writer of new items); a trigger counts
-- what is deleted, by whatever statement. Message archives are not bounded and not counted.
CREATE TABLE archive_counts (
    host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, items INTEGER NOT NULL,
    PRIMARY KEY (host, username, store)
) WITHOUT ROWID;
INSERT INTO archive_counts
    SELECT host, username, store, count(*) FROM archive WHERE store = 'offline' GROUP BY host, username, store;
-- An emptied store leaves no row behind, so that a deleted account leaves nothing.
CREATE TRIGGER archive_uncounted AFTER DELETE ON archive WHEN OLD.store = 'offline' BEGIN
    UPDATE archive_counts SET items = items - 1
        WHERE host = OLD.host AND username = OLD.username AND store = OLD.store;
    DELETE FROM archive_counts
        WHERE host = OLD.host AND username = OLD.username AND store = OLD.store AND items = 0;
END;
