-- Group chat rooms (XEP-0045): the room's configuration as the MUC module's JSON, and the
-- affiliations of bare JIDs (with reserved nicks). A room's archive lives in the archive table
-- (host = the service's domain, username = the room's name).
CREATE TABLE muc_rooms (
    service TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, name)
);
CREATE TABLE muc_affiliations (
    service TEXT NOT NULL, name TEXT NOT NULL, jid TEXT NOT NULL, affiliation TEXT NOT NULL, nick TEXT,
    reason TEXT, PRIMARY KEY (service, name, jid)
);
-- "My groups" and forgetting a deleted account look affiliations up by JID.
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid);
