-- Archive queries bounded by time (XEP-0313 start and end) and the deletion of expired messages
-- find their items through archive_by_time. The indexes in archive order carry the timestamp
-- too, so that reading in that order checks it without fetching the rows it skips.
CREATE INDEX archive_by_time ON archive (host, username, store, timestamp);
DROP INDEX archive_by_user;
CREATE INDEX archive_by_user ON archive (host, username, store, seq, timestamp);
DROP INDEX archive_by_with;
CREATE INDEX archive_by_with ON archive (host, username, store, with_jid, seq, timestamp);
