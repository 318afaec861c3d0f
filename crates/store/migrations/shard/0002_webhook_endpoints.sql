-- A merchant's webhook endpoints, on the merchant's shard (they used to be in
-- the control database; control migration 0002 drops that table).
--
-- Why here: creating an endpoint must commit atomically with its idempotency
-- record, which lives on the merchant's shard, and the webhook dispatcher
-- joins events (on the shard) with the merchant's endpoints.

create table webhook_endpoints (
    id                text primary key check (id like 'we\_%'),
    merchant_id       text not null,
    livemode          boolean not null,
    -- Live endpoints receive real payment data: HTTPS only. Test mode also
    -- allows plain HTTP, for local development.
    url               text not null check (length(url) between 1 and 2048),
    enabled_events    text[] not null check (cardinality(enabled_events) between 1 and 100
                          and array_position(enabled_events, null) is null),
    description       text check (length(description) <= 5000),
    metadata          jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
    status            text not null default 'enabled' check (status in ('enabled', 'disabled')),
    -- The signing secret (whsec_…), shown once at creation. Kept sealed by
    -- the vault (aad = endpoint ID): the dispatcher needs it to sign, and
    -- nothing else may read it.
    secret_key_id     text not null,
    secret_wrapped    bytea not null,
    secret_ciphertext bytea not null,
    created           bigint not null,                    -- Unix seconds
    -- Deleted endpoints are kept (and hidden from the API) so that deliveries
    -- already recorded keep their reference.
    deleted_at        bigint check (deleted_at >= created),
    check (url like 'https://%' or (not livemode and url like 'http://%'))
);
create index webhook_endpoints_list on webhook_endpoints (merchant_id, livemode, id desc) where deleted_at is null;
