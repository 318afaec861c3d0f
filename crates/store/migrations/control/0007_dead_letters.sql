-- Dead letters parked for operators (Internal API). Messages that kept
-- failing (or could never be handled) land in the broker's `{queue}.dlq`
-- queues; the Internal API moves them here — row committed first, then
-- the broker message acknowledged — so they can be listed, inspected,
-- replayed into the queue they died in, or discarded, with who did it.
-- RabbitMQ cannot browse a queue without taking messages off it; a table
-- can be read any number of times.

create table dead_letters (
    id             bigserial primary key,
    queue          text not null,                  -- the consumer queue it died in, without the topology prefix
    message_id     text,                           -- the envelope's id (stable across redeliveries)
    message_type   text,                           -- the envelope's type, e.g. command.authorize
    body           bytea not null,                 -- exactly as received, for a faithful replay
    headers        jsonb not null default '{}',    -- the AMQP headers (x-death: why and how often)
    reason         text,                           -- x-death's reason: rejected, delivery_limit, …
    collected_at_ms bigint not null,
    status         text not null default 'pending' check (status in ('pending', 'replayed', 'discarded')),
    decided_by     text check (length(decided_by) <= 200),
    decided_at_ms  bigint
);
-- A message is parked once while pending: collecting it again (the broker
-- redelivered it because our ack was lost) finds the row.
create unique index dead_letters_pending_message on dead_letters (queue, message_id)
    where status = 'pending' and message_id is not null;
create index dead_letters_list on dead_letters (status, id desc);
