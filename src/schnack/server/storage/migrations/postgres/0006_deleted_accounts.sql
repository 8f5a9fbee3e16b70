-- Accounts deleted lately (storage.postgres.Accounts.delete), which take no new data until they
-- are registered again: a message routed to an account just before its deletion, by any node,
-- can come to be written after it, and would wait there for whoever next registers the name.
-- until: when the entry stops counting (seconds since the epoch, by the database's clock).
CREATE TABLE deleted_accounts (
    host TEXT NOT NULL, username TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, username)
);

-- Every write of what an account keeps takes the account's lock shared, and a deletion takes it
-- exclusively before it deletes anything: a write that began first commits before the deletion
-- goes on (and is deleted with the rest); one that waited for the deletion then finds the entry,
-- which it reads in a snapshot of its own, taken after the wait (READ COMMITTED). The lock's first
-- key is 'acct' (the archives' locks have 'arch', the migrations' lock has one key only).
CREATE FUNCTION lock_account_for_deletion(h TEXT, u TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1633903476, hashtext(h || '/' || u));
END $$;

CREATE FUNCTION account_locked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1633903476, hashtext(NEW.host || '/' || NEW.username));
    RETURN NEW;
END $$;

-- Checked once per statement, after each of its rows took its account's lock: a query per row
-- would cost twice what the rest of an archive append does. foreign_key_violation with this
-- constraint's name is what storage.postgres turns into AccountGone.
CREATE FUNCTION accounts_not_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    h TEXT;
    u TEXT;
BEGIN
    SELECT d.host, d.username INTO h, u FROM deleted_accounts d JOIN added USING (host, username)
        WHERE d.until > extract(epoch FROM clock_timestamp()) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the account %@% is deleted', u, h
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'deleted_accounts';
    END IF;
    RETURN NULL;
END $$;

-- Each table of an account's data gets both.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['archive', 'roster', 'roster_versions', 'kv', 'maps'] LOOP
        EXECUTE format('CREATE TRIGGER account_locked BEFORE INSERT ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION account_locked()', t);
        EXECUTE format('CREATE TRIGGER accounts_not_deleted AFTER INSERT ON %I '
                       'REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION accounts_not_deleted()', t);
    END LOOP;
END $$;
