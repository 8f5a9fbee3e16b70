-- The full JIDs (with a resource) an archived message is from and to, so that a query for the
-- messages of one device (XEP-0313 §4.1.1, 'with' a full JID) reads them from an index instead
-- of reading every message of the archive or of the contact (docs/benchmarks.md, "Queries for
-- one device"). NULL where the address is a bare JID or absent; the indexes keep no entry for it.
ALTER TABLE archive ADD COLUMN from_full TEXT, ADD COLUMN to_full TEXT;

-- The messages archived before: their addresses as the start tag of the stored message has them
-- (as the server serialized it: in double quotes, escaped), where they have a resource. Only the
-- message archives (store 'mam') are queried by full JID.
UPDATE archive SET from_full = found.from_full, to_full = found.to_full
FROM (
    SELECT seq,
        replace(replace(replace(replace(substring(head FROM ' from="([^"]*/[^"]*)"'),
            '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&amp;', '&') AS from_full,
        replace(replace(replace(replace(substring(head FROM ' to="([^"]*/[^"]*)"'),
            '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&amp;', '&') AS to_full
    FROM (SELECT seq, substring(convert_from(payload, 'UTF8') FROM '^<[^>]*') AS head
          FROM archive WHERE store = 'mam') AS heads
) AS found
WHERE archive.seq = found.seq AND (found.from_full IS NOT NULL OR found.to_full IS NOT NULL);

CREATE INDEX archive_by_from ON archive (host, username, store, from_full, seq, timestamp)
    WHERE from_full IS NOT NULL;
CREATE INDEX archive_by_to ON archive (host, username, store, to_full, seq, timestamp)
    WHERE to_full IS NOT NULL;
