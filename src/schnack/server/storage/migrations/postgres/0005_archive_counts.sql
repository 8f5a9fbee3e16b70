-- The number of items in each offline store (XEP-0160; storage.base.BOUNDED_STORES), kept by
-- triggers in the transaction that adds or removes them: the store's limit is checked on every
-- message it takes, and count(*) reads every index entry of the store. Message archives are not
-- bounded and not counted: their appends, one or two per message, cost only the trigger's check
-- of the store's name.
-- Appends by nodes still running meanwhile wait, so that the first count misses none.
LOCK TABLE archive IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE archive_counts (
    host TEXT NOT NULL, username TEXT NOT NULL, store TEXT NOT NULL, items BIGINT NOT NULL,
    PRIMARY KEY (host, username, store)
);
INSERT INTO archive_counts
    SELECT host, username, store, count(*) FROM archive WHERE store = 'offline' GROUP BY host, username, store;

CREATE FUNCTION archive_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO archive_counts VALUES (NEW.host, NEW.username, NEW.store, 1)
        ON CONFLICT (host, username, store) DO UPDATE SET items = archive_counts.items + 1;
    RETURN NULL;
END $$;

-- Deletions by statement (an offline delivery deletes a page of 100), the counts locked in key
-- order so that two statements touching several stores take them in one order. An emptied store
-- leaves no row behind, so that a deleted account leaves nothing.
CREATE FUNCTION archive_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM archive_counts c
        WHERE (c.host, c.username, c.store) IN (SELECT host, username, store FROM removed WHERE store = 'offline')
        ORDER BY c.host, c.username, c.store FOR UPDATE;
    UPDATE archive_counts c SET items = c.items - gone.items
        FROM (SELECT host, username, store, count(*) AS items FROM removed WHERE store = 'offline'
              GROUP BY host, username, store) gone
        WHERE (c.host, c.username, c.store) = (gone.host, gone.username, gone.store);
    DELETE FROM archive_counts c
        WHERE c.items <= 0
          AND (c.host, c.username, c.store) IN (SELECT host, username, store FROM removed WHERE store = 'offline');
    RETURN NULL;
END $$;

CREATE TRIGGER archive_counted AFTER INSERT ON archive
    FOR EACH ROW WHEN (NEW.store = 'offline') EXECUTE FUNCTION archive_count_added();
CREATE TRIGGER archive_uncounted AFTER DELETE ON archive
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION archive_count_removed();
