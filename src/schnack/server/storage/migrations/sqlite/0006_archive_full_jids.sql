-- The full JIDs (with a resource) an archived message is from and to, so that a query for the
-- messages of one device (XEP-0313 §4.1.1, 'with' a full JID) reads them from an index instead
-- of reading every message of the archive or of the contact (docs/benchmarks.md, "Queries for
-- one device"). NULL where the address is a bare JID or absent; the indexes keep no entry for it.
ALTER TABLE archive ADD COLUMN from_full TEXT;
ALTER TABLE archive ADD COLUMN to_full TEXT;

-- The messages archived before: their addresses as the start tag of the stored message has them
-- (as the server serialized it: in double quotes, escaped), where they have a resource. Only the
-- message archives (store 'mam') are queried by full JID.
UPDATE archive SET from_full = found.from_full, to_full = found.to_full
FROM (
    SELECT seq,
        CASE WHEN instr(from_value, '/') THEN from_value END AS from_full,
        CASE WHEN instr(to_value, '/') THEN to_value END AS to_full
    FROM (
        SELECT seq,
            replace(replace(replace(replace(
                CASE WHEN instr(head, ' from="') THEN
                    substr(head, instr(head, ' from="') + 7,
                           instr(substr(head, instr(head, ' from="') + 7), '"') - 1) END,
                '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&amp;', '&') AS from_value,
            replace(replace(replace(replace(
                CASE WHEN instr(head, ' to="') THEN
                    substr(head, instr(head, ' to="') + 5,
                           instr(substr(head, instr(head, ' to="') + 5), '"') - 1) END,
                '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&amp;', '&') AS to_value
        FROM (
            SELECT seq, substr(CAST(payload AS TEXT), 1, instr(CAST(payload AS TEXT), '>')) AS head
            FROM archive WHERE owner IN (SELECT owner FROM archive_owners WHERE store = 'mam')
        )
    )
) AS found
WHERE archive.seq = found.seq AND (found.from_full IS NOT NULL OR found.to_full IS NOT NULL);

CREATE INDEX archive_by_from ON archive (owner, from_full, seq, timestamp) WHERE from_full IS NOT NULL;
CREATE INDEX archive_by_to ON archive (owner, to_full, seq, timestamp) WHERE to_full IS NOT NULL;
