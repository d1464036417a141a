-- The change feed: an outbox appended to in the same transaction as every write on this
-- shard. Readers (the search indexers on every node, the rebalancer's catch-up) follow it
-- by `seq`, which only grows, so "everything after my cursor" is one index range scan.
--
-- route_hash and slot are stored so a rebalance can select one slot's changes without
-- decoding payloads; version lets a consumer drop a change older than what it holds.
CREATE TABLE change_feed (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route_hash   bigint      NOT NULL,
    slot         integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    entity       text        NOT NULL,
    entity_id    text        NOT NULL,
    version      bigint      NOT NULL,
    op           text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    payload      jsonb,
    committed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX change_feed_slot_seq ON change_feed (slot, seq);
