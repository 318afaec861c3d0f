-- A shard database: one merchant's payment data always lives on one shard
-- (the one encoded in the merchant's ID and in every object ID).
-- Money is bigint minor units; invariants are checked here as well as in
-- Rust, so no code path can persist an impossible amount.

create table customers (
    id           text primary key,                  -- cus_…
    merchant_id  text not null,
    livemode     boolean not null,
    email        text,
    name         text,
    description  text,
    phone        text,
    address      jsonb,
    metadata     jsonb not null default '{}',
    created      bigint not null
);
create index customers_list on customers (merchant_id, livemode, id desc);

-- Tokenized cards. Only brand, first 6, last 4 and expiry are in clear; the
-- PAN and (until authorization) the CVC are sealed by the vault.
create table payment_methods (
    id                text primary key,             -- pm_…
    merchant_id       text not null,
    livemode          boolean not null,
    customer_id       text,
    brand             text not null,
    first6            text not null check (first6 ~ '^[0-9]{6}$'),
    last4             text not null check (last4 ~ '^[0-9]{4}$'),
    exp_month         smallint not null check (exp_month between 1 and 12),
    exp_year          smallint not null,
    fingerprint       text not null,
    pan_key_id        text not null,
    pan_wrapped_key   bytea not null,
    pan_ciphertext    bytea not null,
    -- CVC is kept only until authorization (PCI DSS 3.3.1), then nulled.
    cvc_key_id        text,
    cvc_wrapped_key   bytea,
    cvc_ciphertext    bytea,
    created           bigint not null,
    check ((cvc_key_id is null) = (cvc_ciphertext is null) and (cvc_ciphertext is null) = (cvc_wrapped_key is null))
);
create index payment_methods_merchant on payment_methods (merchant_id, livemode, id desc);

create table payment_intents (
    id                     text primary key,        -- pi_…
    merchant_id            text not null,
    livemode               boolean not null,
    amount                 bigint not null check (amount > 0 and amount <= 99999999),
    currency               text not null check (currency ~ '^[a-z]{3}$'),
    status                 text not null check (status in ('requires_payment_method', 'requires_confirmation',
                               'requires_action', 'processing', 'requires_capture', 'canceled', 'succeeded')),
    capture_method         text not null check (capture_method in ('automatic', 'automatic_async', 'manual')),
    amount_capturable      bigint not null default 0,
    amount_received        bigint not null default 0,
    amount_refunded        bigint not null default 0,
    amount_refund_pending  bigint not null default 0,
    customer_id            text,
    payment_method_id      text,
    latest_attempt_id      text,
    latest_charge_id       text,
    authorized_attempt_id  text,
    pending                jsonb,                   -- the operation at the processor, if any
    last_payment_error     jsonb,
    next_action            jsonb,
    cancellation_reason    text,
    canceled_at            bigint,
    capture_before         bigint,
    client_secret          text not null,
    description            text,
    metadata               jsonb not null default '{}',
    payment_method_types   text[] not null default '{card}',
    receipt_email          text,
    return_url             text,
    statement_descriptor   text,
    statement_descriptor_suffix text,
    -- Bumped by every change: caches and clients can tell newer from older.
    version                bigint not null default 1,
    created                bigint not null,
    check (amount_capturable between 0 and amount),
    check (amount_received between 0 and amount),
    check (amount_refunded >= 0 and amount_refund_pending >= 0),
    check (amount_refunded + amount_refund_pending <= amount_received),
    check (status <> 'processing' or pending is not null)
);
create index payment_intents_list on payment_intents (merchant_id, livemode, id desc);
create index payment_intents_customer on payment_intents (merchant_id, livemode, customer_id, id desc) where customer_id is not null;
create index payment_intents_processing on payment_intents (id) where status = 'processing';

-- One row per confirmation: the processor knows the payment by the attempt,
-- and its idempotency keys derive from the attempt ID.
create table payment_attempts (
    id                   text primary key,          -- pa_…
    payment_intent_id    text not null references payment_intents (id),
    merchant_id          text not null,
    charge_id            text not null unique,
    payment_method_id    text not null,
    amount               bigint not null check (amount > 0),
    currency             text not null,
    capture              boolean not null,
    status               text not null default 'pending'
                             check (status in ('pending', 'requires_action', 'approved', 'declined', 'superseded')),
    processor            text not null default 'sim',
    processor_reference  text,
    failure_code         text,
    decline_code         text,
    failure_message      text,
    created              bigint not null
);
create index payment_attempts_intent on payment_attempts (payment_intent_id);

create table refunds (
    id                 text primary key,            -- re_…
    merchant_id        text not null,
    livemode           boolean not null,
    payment_intent_id  text not null references payment_intents (id),
    charge_id          text not null,
    attempt_id         text not null,
    amount             bigint not null check (amount > 0),
    currency           text not null,
    status             text not null check (status in ('pending', 'succeeded', 'failed')),
    reason             text,
    failure_reason     text,
    metadata           jsonb not null default '{}',
    created            bigint not null
);
create index refunds_list on refunds (merchant_id, livemode, id desc);
create index refunds_intent on refunds (payment_intent_id);

create table events (
    id           text primary key,                  -- evt_…
    merchant_id  text not null,
    livemode     boolean not null,
    type         text not null,
    api_version  text not null,
    object       jsonb not null,                    -- data.object: a snapshot at the time of the event
    request_id   text,
    created      bigint not null
);
create index events_list on events (merchant_id, livemode, id desc);
create index events_type on events (merchant_id, livemode, type, id desc);

-- The transactional outbox: written in the same transaction as the state
-- change it announces; the relay publishes and marks rows (DESIGN.md §5).
create table outbox (
    id            bigserial primary key,
    routing_key   text not null,                    -- e.g. command.authorize, event.payment_intent.succeeded
    payload       jsonb not null,
    headers       jsonb not null default '{}',      -- traceparent and friends
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index outbox_unpublished on outbox (id) where published_at is null;

-- Stripe-style idempotency keys (API.md). The response is stored in the
-- same transaction as the state change it reports.
create table idempotency_keys (
    merchant_id      text not null,
    livemode         boolean not null,
    key              text not null check (length(key) between 1 and 255),
    fingerprint      text not null,                 -- hash of method, path and canonical parameters
    request_id       text not null,                 -- the first request's req_…
    locked_at        timestamptz,                   -- set while a request executes under the key
    recovery_point   text not null default 'started',
    response_status  integer,
    response_body    bytea,
    created_at       timestamptz not null default now(),
    primary key (merchant_id, livemode, key)
);
create index idempotency_keys_age on idempotency_keys (created_at);

-- The double-entry ledger. Journals and their lines are immutable, and every
-- journal balances per currency, checked by the database at commit.
create table journals (
    id                 bigserial primary key,
    merchant_id        text not null,
    livemode           boolean not null,
    payment_intent_id  text,
    refund_id          text,
    description        text not null,
    created_at         timestamptz not null default now()
);

create table journal_lines (
    id          bigserial primary key,
    journal_id  bigint not null references journals (id),
    merchant_id text not null,
    livemode    boolean not null,
    account     text not null check (account in ('processor_receivable', 'merchant_payable',
                    'authorized_funds', 'authorization_holds')),
    currency    text not null check (currency ~ '^[a-z]{3}$'),
    side        text not null check (side in ('debit', 'credit')),
    amount      bigint not null check (amount > 0),
    created_at  timestamptz not null default now()
);
create index journal_lines_journal on journal_lines (journal_id);
create index journal_lines_account on journal_lines (merchant_id, account, currency);

create function ledger_check_journal_balanced() returns trigger language plpgsql as $$
declare
    journal bigint;
begin
    -- Fired by both tables; only the executed branch's field is resolved.
    if tg_table_name = 'journals' then
        journal := new.id;
    else
        journal := new.journal_id;
    end if;
    if (select count(*) from journal_lines where journal_id = journal) < 2 then
        raise exception 'journal % has fewer than two lines', journal using errcode = '23514';
    end if;
    if exists (
        select 1 from journal_lines where journal_id = journal
        group by currency
        having sum(case side when 'debit' then amount else -amount end) <> 0
    ) then
        raise exception 'journal % does not balance per currency', journal using errcode = '23514';
    end if;
    return null;
end $$;

-- Deferred to commit: the lines of a journal are inserted one statement at a
-- time (or several rows at once), and only the whole must balance.
create constraint trigger journal_lines_balanced
    after insert on journal_lines deferrable initially deferred
    for each row execute function ledger_check_journal_balanced();
create constraint trigger journals_have_lines
    after insert on journals deferrable initially deferred
    for each row execute function ledger_check_journal_balanced();

create function ledger_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'ledger rows are immutable: % on % refused', tg_op, tg_table_name using errcode = '42501';
end $$;

-- Immutable for everyone, the table owner included: corrections are new,
-- reversing journals, never edits.
create trigger journals_immutable before update or delete on journals
    for each row execute function ledger_refuse_change();
create trigger journal_lines_immutable before update or delete on journal_lines
    for each row execute function ledger_refuse_change();
create trigger journals_no_truncate before truncate on journals
    for each statement execute function ledger_refuse_change();
create trigger journal_lines_no_truncate before truncate on journal_lines
    for each statement execute function ledger_refuse_change();
