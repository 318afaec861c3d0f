-- The audit trail (DESIGN.md §7, PCI DSS 10): every access to and change
-- through the back office, allowed or denied, as an append-only,
-- hash-chained log. crates/store/src/audit.rs writes and verifies it.
--
-- Each row's hash is SHA-256 over its predecessor's hash and a canonical
-- encoding of the row (computed in Rust, see audit.rs), so altering a row
-- breaks its own hash and deleting one breaks the chain after it. IDs are
-- handed out under the chain-head lock, so they are gapless: a gap is a
-- deleted row. The head row remembers the last ID and hash, so deleting the
-- newest rows shows too.

create table audit_log (
    id             bigint primary key check (id >= 1),
    at_ms          bigint not null,                 -- Unix milliseconds
    actor_subject  text not null check (length(actor_subject) between 1 and 200),
    actor_role     text not null check (length(actor_role) between 1 and 50),
    action         text not null check (length(action) between 1 and 200),
    resource       text check (length(resource) <= 500),
    outcome        text not null check (length(outcome) between 1 and 50),
    origin         text check (length(origin) <= 100), -- the client's IP address
    -- Kept as the exact text that was hashed (canonical JSON): jsonb would
    -- re-format it and the hash could no longer be recomputed.
    details        text not null check (length(details) <= 20000),
    prev_hash      bytea not null check (length(prev_hash) = 32),
    hash           bytea not null unique check (length(hash) = 32)
);
create index audit_log_actor on audit_log (actor_subject, id desc);
create index audit_log_resource on audit_log (resource, id desc);
create index audit_log_time on audit_log (at_ms);

-- The chain's head: one row, locked by every append, so appends are linear.
create table audit_chain_head (
    singleton  boolean primary key default true check (singleton),
    last_id    bigint not null,
    last_hash  bytea not null check (length(last_hash) = 32)
);
insert into audit_chain_head (last_id, last_hash) values (0, decode(repeat('00', 32), 'hex'));

create function audit_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'the audit log is append-only: % on % refused', tg_op, tg_table_name using errcode = '42501';
end $$;

create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_refuse_change();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_refuse_change();
