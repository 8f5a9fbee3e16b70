-- The resource of the address an item's with_jid was taken from: a contact's, in a message
-- archive; the sender's nick, in a room's. A query with a full JID or an occupant JID (XEP-0313
-- §4.1.1) finds its messages by archive_by_resource instead of reading and parsing the contact's
-- or the room's. '' when the address had none: those items stay out of the index, which then
-- costs an append nothing. NULL for the items archived before this migration, which such a query
-- reads (archive_unresourced, in archive order) and parses; adding the column rewrites nothing,
-- and new items never enter that index.
ALTER TABLE archive ADD COLUMN with_resource TEXT;
CREATE INDEX archive_by_resource ON archive (host, username, store, with_resource, seq) WHERE with_resource <> '';
CREATE INDEX archive_unresourced ON archive (host, username, store, seq) WHERE with_resource IS NULL;
