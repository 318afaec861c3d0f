-- The merchant webhook dispatcher's durable schedule (DESIGN.md §5 step 6,
-- §8): one delivery per (event, endpoint), and every attempt at it.
--
-- Why on the shard: events and endpoints live here, so the fan-out inserts
-- deliveries in one statement that joins them, and the dispatcher claims a
-- delivery together with its event and endpoint in one round trip.
--
-- Times are Unix milliseconds taken from the dispatcher's injected clock,
-- never the database's now(), so tests can drive backoff and the retry
-- window without waiting.

create table webhook_deliveries (
    id                  bigserial primary key,
    event_id            text not null references events (id),
    -- Endpoints are deleted softly, so the reference survives a delete.
    endpoint_id         text not null references webhook_endpoints (id),
    merchant_id         text not null,
    livemode            boolean not null,
    status              text not null default 'pending'
                            check (status in ('pending', 'succeeded', 'failed')),
    -- Attempts claimed so far; a claim increments it, so an attempt number
    -- identifies one claim even when two dispatchers race after a crash.
    attempts            integer not null default 0 check (attempts >= 0),
    -- When a pending delivery is next due. A claim pushes it past the
    -- attempt's timeout (a lease): a dispatcher that dies mid-attempt
    -- leaves a delivery that simply becomes due again.
    next_attempt_at_ms  bigint not null,
    created_at_ms       bigint not null,
    -- The retry window (3 days by default) runs from the first attempt.
    first_attempt_at_ms bigint,
    last_attempt_at_ms  bigint,
    last_http_status    smallint check (last_http_status between 100 and 999),
    last_error          text check (length(last_error) <= 1000),
    delivered_at_ms     bigint,
    unique (event_id, endpoint_id),
    check ((status = 'succeeded') = (delivered_at_ms is not null))
);
-- What the dispatcher polls: only pending rows, oldest due first.
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at_ms)
    where status = 'pending';
create index webhook_deliveries_endpoint on webhook_deliveries (endpoint_id, id desc);

-- One row per attempt, written when its outcome is known. Append-only: an
-- attempt's record never changes (rows may be deleted by a retention job).
create table webhook_delivery_attempts (
    delivery_id  bigint not null references webhook_deliveries (id),
    attempt      integer not null check (attempt >= 1),
    at_ms        bigint not null,
    -- The receiver's answer, or why there was none (timeout, refused
    -- address, connection error, endpoint deleted).
    http_status  smallint check (http_status between 100 and 999),
    error        text check (length(error) <= 1000),
    latency_ms   bigint not null check (latency_ms >= 0),
    primary key (delivery_id, attempt),
    check (http_status is not null or error is not null)
);

create function webhook_attempts_refuse_update() returns trigger language plpgsql as $$
begin
    raise exception 'webhook delivery attempts are append-only: % refused', tg_op using errcode = '42501';
end $$;

create trigger webhook_delivery_attempts_append_only before update on webhook_delivery_attempts
    for each row execute function webhook_attempts_refuse_update();
