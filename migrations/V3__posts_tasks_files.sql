-- Posts, tasks and files, each on its owner's shard. An item's id is its owner's user id
-- followed by a UUIDv7 (64 hex characters), so the id alone routes to the shard.
-- route_hash and slot repeat the owner's, so a rebalance can move a slot's rows by index.
-- version starts at 1 and grows by one per change; the change feed carries it.

CREATE TABLE posts (
    id         text        PRIMARY KEY,
    owner_id   text        NOT NULL,
    route_hash bigint      NOT NULL,
    slot       integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    title      text        NOT NULL,
    body       text        NOT NULL,
    tags       text[]      NOT NULL DEFAULT '{}',
    visibility text        NOT NULL CHECK (visibility IN ('public', 'private')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    bigint      NOT NULL DEFAULT 1
);

-- An owner's posts newest first, keyset-paginated on (created_at, id).
CREATE INDEX posts_owner_created ON posts (owner_id, created_at DESC, id DESC);
CREATE INDEX posts_slot ON posts (slot);

CREATE TABLE tasks (
    id         text        PRIMARY KEY,
    owner_id   text        NOT NULL,
    route_hash bigint      NOT NULL,
    slot       integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    title      text        NOT NULL,
    notes      text        NOT NULL DEFAULT '',
    due_at     timestamptz,
    done       boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version    bigint      NOT NULL DEFAULT 1
);

CREATE INDEX tasks_owner_created ON tasks (owner_id, created_at DESC, id DESC);
CREATE INDEX tasks_slot ON tasks (slot);

-- File metadata; the bytes live in the object store under `object_key`.
CREATE TABLE files (
    id           text        PRIMARY KEY,
    owner_id     text        NOT NULL,
    route_hash   bigint      NOT NULL,
    slot         integer     NOT NULL CHECK (slot >= 0 AND slot < 4096),
    name         text        NOT NULL,
    content_type text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       text        NOT NULL,
    object_key   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    version      bigint      NOT NULL DEFAULT 1
);

CREATE INDEX files_owner_created ON files (owner_id, created_at DESC, id DESC);
CREATE INDEX files_slot ON files (slot);
