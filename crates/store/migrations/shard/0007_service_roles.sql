-- Least privilege in a shard database (PCI DSS 7.2): one role per service
-- with only the grants its code needs. The role that runs the migrations
-- owns every table and is the only one that may change the schema; the
-- services connect as their own role ([<service>] database_user).
-- docs/security.md lists what each role may do and the test that proves
-- each refusal (crates/store/tests/roles.rs).
--
-- Tables created by later migrations get no grants by default: each such
-- migration grants its table to the roles that need it.
--
-- Sealed data: only the integration service (the one that decrypts) may
-- read the wrapped data keys and ciphertexts of cards and of webhook
-- signing secrets. The External API seals and inserts them but may read
-- back only the clear columns; the back office reads the clear columns.
--
-- Immutable rows: nobody is granted UPDATE, DELETE or TRUNCATE on the
-- ledger (journals, journal_lines); its triggers (0001) refuse them even
-- for the owner.

-- The services' roles are cluster-wide, so every database's migration
-- creates them if they are missing (a shard may be migrated before the
-- control database, or alone). Tests migrate many databases at once: two
-- migrations racing to create the same role must both succeed.
-- The roles get LOGIN but no password: where the server asks for one (any
-- deployment), the deployment sets it from its secret store; locally
-- scripts/stack.sh creates them with the development password first.
do $$
declare
    service text;
begin
    foreach service in array array['snakepay_external_api', 'snakepay_internal_api', 'snakepay_integration'] loop
        if not exists (select 1 from pg_roles where rolname = service) then
            begin
                execute format('create role %I login', service);
            exception
                -- Created meanwhile by a concurrent migration (the second
                -- form is the unique index noticing first).
                when duplicate_object or unique_violation then null;
                when insufficient_privilege then
                    raise exception 'role % does not exist and % may not create it', service, current_user
                        using errcode = '42501',
                              hint = 'create the service roles first (scripts/stack.sh does) or migrate as a role with CREATEROLE';
            end;
        end if;
        -- The migrating role becomes a member, so it may end the service's
        -- sessions (dropping a database WITH (FORCE), as the tests do); it
        -- owns every object, so this gives it nothing else. Where it may
        -- not grant that, the deployment does (scripts/stack.sh does).
        if not pg_has_role(current_user, service, 'member') then
            begin
                execute format('grant %I to %I', service, current_user);
            exception
                when insufficient_privilege or invalid_grant_operation then
                    raise notice '% may not join role %; grant it by hand', current_user, service;
            end;
        end if;
    end loop;
end $$;

-- Only the migrating role (the owner of every object here) changes the
-- schema. PostgreSQL 15 already withholds CREATE on `public` from PUBLIC;
-- this keeps it so on clusters created or upgraded from older versions.
revoke create on schema public from public;
grant usage on schema public to snakepay_external_api, snakepay_internal_api, snakepay_integration;

grant usage on all sequences in schema public
    to snakepay_external_api, snakepay_internal_api, snakepay_integration;

-- Cards: clear columns for the APIs, everything for the integration
-- service, which also forgets the CVC after authorization.
grant insert on payment_methods to snakepay_external_api;
grant select (id, merchant_id, livemode, customer_id, brand, first6, last4, exp_month, exp_year,
              fingerprint, created)
    on payment_methods to snakepay_external_api, snakepay_internal_api;
grant select on payment_methods to snakepay_integration;
grant update (cvc_key_id, cvc_wrapped_key, cvc_ciphertext) on payment_methods to snakepay_integration;

-- Webhook endpoints: the External API creates and edits them, never reads
-- the sealed signing secret; the dispatcher (integration) signs with it.
grant insert on webhook_endpoints to snakepay_external_api;
grant select (id, merchant_id, livemode, url, enabled_events, description, metadata, status, created,
              deleted_at)
    on webhook_endpoints to snakepay_external_api, snakepay_internal_api;
grant update (url, enabled_events, description, metadata, status, deleted_at)
    on webhook_endpoints to snakepay_external_api;
grant select on webhook_endpoints to snakepay_integration;

-- Payments, refunds and customers.
grant select, insert, update on customers, payment_intents, payment_attempts, refunds
    to snakepay_external_api;
grant select on customers, payment_attempts to snakepay_internal_api, snakepay_integration;
grant select, insert, update on payment_intents, refunds to snakepay_internal_api;
grant select, update on payment_intents to snakepay_integration;
grant insert, update on payment_attempts to snakepay_integration;
grant select, insert, update on refunds to snakepay_integration;

-- Events and the outbox: written with every change; the relay (integration)
-- reads and marks the outbox.
grant select, insert on events to snakepay_external_api, snakepay_internal_api, snakepay_integration;
grant insert on outbox to snakepay_external_api, snakepay_internal_api;
grant select, insert, update on outbox to snakepay_integration;

-- Idempotency keys: the External API's, including the reaper's deletes.
grant select, insert, update, delete on idempotency_keys to snakepay_external_api;

-- The ledger: append and read, nothing else, for everyone.
grant select, insert on journals, journal_lines
    to snakepay_external_api, snakepay_internal_api, snakepay_integration;

-- What the integration service writes in the background (recorder, webhook
-- dispatcher); the back office reads it for a payment's story.
grant select, insert on event_history, request_log, webhook_delivery_attempts to snakepay_integration;
grant select, insert, update on webhook_deliveries to snakepay_integration;
grant select on event_history, request_log, webhook_deliveries, webhook_delivery_attempts
    to snakepay_internal_api;
