-- Accounts. A user lives on the shard of hash(user id); the id is the routing key, so
-- anything that knows the id reaches the row without a lookup.
CREATE TABLE users (
    id                  text        PRIMARY KEY,
    route_hash          bigint      NOT NULL,
    slot                integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    username            text        NOT NULL,
    email               text        NOT NULL,
    password_hash       text        NOT NULL,
    roles               text[]      NOT NULL DEFAULT ARRAY['user'],
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    version             bigint      NOT NULL DEFAULT 1
);

CREATE INDEX users_slot ON users (slot);

-- The login-name index ("lookup vindex"): one row per normalized username or email
-- (`username:alice`, `email:alice@example.com`), on the shard of hash(that key), so
-- uniqueness across all shards is a primary-key check on one shard.
--
-- Signup claims every name first (state 'claimed', with an expiry), then creates the
-- user, then confirms the claims. A claim whose signup crashed expires; whoever wants
-- the name next first settles the old signup through signup_outcomes (below).
CREATE TABLE login_names (
    name       text        PRIMARY KEY,
    route_hash bigint      NOT NULL,
    slot       integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    user_id    text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('claimed', 'confirmed')),
    claimed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CHECK ((state = 'claimed') = (expires_at IS NOT NULL))
);

CREATE INDEX login_names_slot ON login_names (slot);

-- How each signup ended, on the user's shard: 'created' is written in the same
-- transaction as the user row; 'abandoned' by whoever reclaims an expired claim. The
-- primary key makes the two race-free: whichever commits first decides, so a slow
-- signup can never create a user whose name was already given away.
CREATE TABLE signup_outcomes (
    user_id    text        PRIMARY KEY,
    outcome    text        NOT NULL CHECK (outcome IN ('created', 'abandoned')),
    decided_at timestamptz NOT NULL DEFAULT now()
);
