-- What the payment pipeline (the integration service) needs.

-- When an intent last changed: the reconciler looks for intents left
-- `processing` (an unknown processor outcome) or `requires_action` (a lost
-- 3-D Secure notification) for longer than its window.
alter table payment_intents add column updated_at timestamptz not null default now();
drop index payment_intents_processing;
create index payment_intents_in_flight on payment_intents (updated_at)
    where status in ('processing', 'requires_action');

-- Refunds still waiting for a definite processor answer.
alter table refunds add column updated_at timestamptz not null default now();
create index refunds_pending on refunds (updated_at) where status = 'pending';

-- The processor's ID of an attempt's authorization is learnt from its first
-- definite answer; notifications name the attempt, captures and refunds name
-- the authorization.
create index payment_attempts_processor_reference on payment_attempts (processor_reference)
    where processor_reference is not null;

-- The recorder's history of every event, written in batches from the
-- broker: the queue that buffers non-critical writes (DESIGN.md §5, step 6).
-- A payment's story for the back office; nothing reads it on a payment path.
create table event_history (
    event_id     text primary key,                 -- evt_…
    merchant_id  text not null,
    livemode     boolean not null,
    type         text not null,
    object_id    text,                             -- the pi_/re_/cus_ the event is about
    occurred_at  timestamptz not null,
    recorded_at  timestamptz not null default now()
);
create index event_history_object on event_history (object_id, occurred_at);
