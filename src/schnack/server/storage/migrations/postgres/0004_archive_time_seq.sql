-- A query bounded by time (XEP-0313 start and end) first finds the lowest and highest seq within
-- the range, then reads in archive order between them. With seq in archive_by_time that first
-- step can read the index alone. (SQLite's archive_by_time already ends in the rowid, which is seq.)
CREATE INDEX archive_by_time_seq ON archive (host, username, store, timestamp, seq);
DROP INDEX archive_by_time;
ALTER INDEX archive_by_time_seq RENAME TO archive_by_time;
