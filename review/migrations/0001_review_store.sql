-- The review queue, the reviewers' verdicts (also the outbox of what each sends out) and the audit log.

CREATE TABLE review_items (
    event_id      text PRIMARY KEY,            -- the item's id: a re-delivered item changes nothing
    subject_event_id text NOT NULL,            -- the event judged: the item's own, or the one an appeal contests
    user_id       text NOT NULL,
    kind          text NOT NULL,
    priority      double precision NOT NULL,
    categories    jsonb NOT NULL,
    reasons       jsonb NOT NULL,
    excerpt       text NOT NULL,
    created_ts    bigint NOT NULL,             -- when the job queued it, ms since the epoch
    hashes        jsonb NOT NULL DEFAULT '{}', -- an upload's image hashes, for the banks
    received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    state         text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'claimed', 'decided')),
    senior_only   boolean NOT NULL DEFAULT false,  -- escalated: only a senior reviewer may claim it
    excluded_reviewer text,                    -- an appeal's: who decided the event before may not judge it again
    claimed_by    text,
    claimed_at    timestamptz,
    lease_expires timestamptz,
    CHECK ((state = 'claimed') = (lease_expires IS NOT NULL))
);
-- What a claim reads: the undecided items, most urgent first (claims also take a lapsed lease's item).
CREATE INDEX review_items_open ON review_items (priority DESC, created_ts) WHERE state <> 'decided';
-- A decision is appealed once.
CREATE UNIQUE INDEX review_items_one_appeal ON review_items (subject_event_id) WHERE kind = 'appeal';

CREATE TABLE verdicts (
    decision_id   text PRIMARY KEY,            -- the moderator-decisions record's event_id
    event_id      text NOT NULL REFERENCES review_items,
    reviewer      text NOT NULL,
    verdict       text NOT NULL CHECK (verdict IN ('confirm', 'overturn', 'escalate')),
    category      text,
    note          text NOT NULL DEFAULT '',
    outbox        jsonb NOT NULL DEFAULT '[]', -- what it sends out besides itself (review.verdicts)
    decided_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz                  -- set once the record is on moderator-decisions
);
CREATE INDEX verdicts_unpublished ON verdicts (decided_at) WHERE published_at IS NULL;

-- Every automated decision and every human action, in order. Append-only for every role: the triggers
-- refuse UPDATE, DELETE and TRUNCATE (an owner could otherwise grant them back to itself).
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor     text NOT NULL,                   -- a reviewer's name, or the policy and model that decided
    action    text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}',
    -- A row read from Kafka: what it was, the record itself, and topic:partition:offset (read once).
    record_kind text CHECK (record_kind IN ('decision', 'review_item', 'parent_alert')),
    record    jsonb,
    source    text UNIQUE
);
CREATE INDEX audit_log_event ON audit_log (event_id, id);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
