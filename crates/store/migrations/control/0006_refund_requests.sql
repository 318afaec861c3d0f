-- Operator refunds with maker-checker (Internal API). A refund above the
-- configured amount waits here for a second operator's approval before it
-- is created on the merchant's shard (and so before the processor is asked).
--
-- The refund's ID is chosen when the request is made, so executing a
-- request twice (a retried approval after a crash) finds the refund it
-- already created instead of creating a second one.

create table refund_requests (
    id                 text primary key check (id like 'rfr\_%'),
    merchant_id        text not null references merchants (id),
    livemode           boolean not null,
    payment_intent_id  text not null,
    refund_id          text not null unique,
    amount             bigint not null check (amount > 0),
    currency           text not null check (currency ~ '^[a-z]{3}$'),
    reason             text check (reason in ('duplicate', 'fraudulent', 'requested_by_customer')),
    status             text not null check (status in ('pending_approval', 'approved', 'rejected', 'executed', 'failed')),
    requested_by       text not null check (length(requested_by) between 1 and 200),
    requested_at       bigint not null,
    decided_by         text check (length(decided_by) <= 200),
    decided_at         bigint,
    decision_note      text check (length(decision_note) <= 2000),
    executed_at        bigint,
    failure            text check (length(failure) <= 2000),
    -- Maker-checker: whoever decides is not whoever asked.
    check (decided_by is null or decided_by <> requested_by)
);
create index refund_requests_status on refund_requests (status, id desc);
create index refund_requests_intent on refund_requests (payment_intent_id);
