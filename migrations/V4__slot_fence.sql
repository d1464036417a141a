-- The write fence of online rebalancing, kept in each shard itself.
--
-- shard_slots says which slots this shard may write: 'owned' (open), 'incoming' (a move
-- is copying the slot here; not open yet) or 'moved' (the slot now lives elsewhere). The
-- cluster catalog seeds it and the mover changes it; nothing else does.
--
-- Every row written to a sharded table passes strata_fence() (a trigger, so no write
-- path can forget it): it takes the slot's advisory lock in shared mode for the rest of
-- the transaction and refuses the write with SQLSTATE SR001 unless the slot is 'owned'
-- here. The mover takes the same lock in exclusive mode to fence a slot: writes to that
-- slot wait (they do not fail), writes to every other slot go on. Once the mover marks
-- the slot 'moved' and commits, the waiting writers get SR001, and the node retries them
-- on the slot's new shard. The mover's own copy and clean-up set `strata.mover` to pass.
CREATE TABLE shard_slots (
    slot       integer     PRIMARY KEY CHECK (slot >= 0 AND slot < 4096),
    state      text        NOT NULL CHECK (state IN ('owned', 'incoming', 'moved')),
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION strata_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_slot integer;
    slot_state text;
BEGIN
    IF current_setting('strata.mover', true) = 'on' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    row_slot := CASE TG_OP WHEN 'DELETE' THEN OLD.slot ELSE NEW.slot END;
    -- 21332 ('ST') names the slot-fence lock space; the slot is the second key.
    PERFORM pg_advisory_xact_lock_shared(21332, row_slot);
    SELECT state INTO slot_state FROM shard_slots WHERE slot = row_slot;
    IF slot_state IS DISTINCT FROM 'owned' THEN
        RAISE EXCEPTION 'slot % is not open for writes on this shard (%)',
            row_slot, coalesce(slot_state, 'not placed here')
            USING ERRCODE = 'SR001';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;

-- The transaction that wrote each change. Sequence numbers are taken at insert, not at
-- commit, so "everything after seq N" can miss a transaction that commits late; the
-- mover's catch-up asks instead "every change whose transaction was not visible in my
-- last snapshot" (pg_visible_in_snapshot), which misses nothing.
ALTER TABLE change_feed ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- signup_outcomes moves with its user's slot, like every other sharded table.
ALTER TABLE signup_outcomes
    ADD COLUMN route_hash bigint,
    ADD COLUMN slot integer CHECK (slot >= 0 AND slot < 4096);
UPDATE signup_outcomes o SET route_hash = u.route_hash, slot = u.slot
    FROM users u WHERE u.id = o.user_id;
CREATE INDEX signup_outcomes_slot ON signup_outcomes (slot);

CREATE TRIGGER users_fence BEFORE INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER login_names_fence BEFORE INSERT OR UPDATE OR DELETE ON login_names
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER signup_outcomes_fence BEFORE INSERT OR UPDATE OR DELETE ON signup_outcomes
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER posts_fence BEFORE INSERT OR UPDATE OR DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER tasks_fence BEFORE INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER files_fence BEFORE INSERT OR UPDATE OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
CREATE TRIGGER change_feed_fence BEFORE INSERT ON change_feed
    FOR EACH ROW EXECUTE FUNCTION strata_fence();
