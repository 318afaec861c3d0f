-- The region's control database: who the merchants are, where their data
-- lives, and how they authenticate. Payment data lives in the shards.

create table merchants (
    id           text primary key,                 -- acct_…; its shard number is encoded in it
    legal_name   text not null check (length(legal_name) between 1 and 200),
    country      text not null check (country ~ '^[A-Z]{2}$'),
    home_region  text not null,
    shard        smallint not null check (shard >= 0),
    -- Live-mode keys work only once KYC is verified (DESIGN.md §7).
    kyc_status   text not null default 'pending' check (kyc_status in ('pending', 'verified', 'rejected')),
    created      bigint not null                    -- Unix seconds
);

create table api_keys (
    id           text primary key,                  -- key_…, not secret: names the key in logs and audits
    merchant_id  text not null references merchants (id),
    kind         text not null check (kind in ('secret', 'publishable')),
    livemode     boolean not null,
    -- HMAC-SHA256 of the whole key under the server's key-hashing secret:
    -- a leaked table does not reveal keys, and lookups stay one index probe.
    key_hash     bytea not null unique,
    last4        text not null,
    created      bigint not null,
    revoked_at   bigint
);
create index api_keys_merchant on api_keys (merchant_id);

create table webhook_endpoints (
    id                text primary key,             -- we_…
    merchant_id       text not null references merchants (id),
    livemode          boolean not null,
    url               text not null,
    enabled_events    text[] not null,
    description       text,
    metadata          jsonb not null default '{}',
    -- The signing secret (whsec_…), shown once at creation. Kept sealed by
    -- the vault (aad = endpoint ID): the dispatcher needs it to sign.
    secret_key_id     text not null,
    secret_wrapped    bytea not null,
    secret_ciphertext bytea not null,
    created           bigint not null,
    deleted_at        bigint
);
create index webhook_endpoints_merchant on webhook_endpoints (merchant_id, livemode, id desc) where deleted_at is null;
