-- The request log: one row per authenticated API request, written in
-- batches by the recorder from the broker (non-critical history; the
-- request never waits for it). On the merchant's shard, next to the
-- payments it touched.
create table request_log (
    request_id   text primary key,                 -- req_…
    merchant_id  text not null,
    livemode     boolean not null,
    method       text not null,
    route        text not null,                    -- the route template, never the raw path
    status       smallint not null,
    duration_ms  bigint not null check (duration_ms >= 0),
    at           timestamptz not null,
    recorded_at  timestamptz not null default now()
);
create index request_log_merchant on request_log (merchant_id, livemode, at desc);
