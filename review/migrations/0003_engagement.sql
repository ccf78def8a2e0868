-- Live priority from engagement: each item keeps the priority it was queued with, and views per minute
-- (counted per content event and minute) raise it while it waits.

ALTER TABLE review_items ADD COLUMN base_priority double precision;
UPDATE review_items SET base_priority = priority;
ALTER TABLE review_items ALTER COLUMN base_priority SET NOT NULL;

CREATE TABLE engagement_minutes (
    subject_event_id text NOT NULL,
    minute           bigint NOT NULL,          -- ms since the epoch, at the start of the record's minute
    views            bigint NOT NULL DEFAULT 0,
    shares           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_event_id, minute)
);

-- Each engagement record once: a re-delivered record adds no views.
CREATE TABLE engagement_seen (
    event_id text PRIMARY KEY
);
