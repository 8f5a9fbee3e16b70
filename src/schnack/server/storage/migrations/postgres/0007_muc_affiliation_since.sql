-- When each bare JID became affiliated with a room (seconds since the epoch): a group whose last
-- owner's account is deleted passes to its longest-standing member. Rows stored before have
-- none (NULL) and count as older than any that has one.
ALTER TABLE muc_affiliations ADD COLUMN since DOUBLE PRECISION;
