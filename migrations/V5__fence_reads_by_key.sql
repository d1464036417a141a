-- The fence's lookup of a slot's state reads shard_slots by its key, however few rows
-- the shard holds.
--
-- The lookup in strata_fence() runs as a cached generic plan, and the planner prices a
-- sequential scan below the primary key once the table is small enough: with 16 shards
-- a shard owns 256 slots (2 pages), and every row written then scanned all 256 of them
-- (7.3 µs a lookup against 3.0 µs by the key with 2,048 slots, measured on Postgres 15;
-- two lookups per item written, the item's row and its feed entry). The setting holds
-- only while the function runs.
ALTER FUNCTION strata_fence() SET enable_seqscan = off;
