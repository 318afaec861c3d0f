-- Least privilege in the control database (PCI DSS 7.2): one role per
-- service with only the grants its code needs. The role that runs the
-- migrations (`snakepay` locally, the deployment's migration user in the
-- cloud) owns every table and is the only one that may change the schema;
-- the services connect as their own role ([<service>] database_user).
-- docs/security.md lists what each role may do and the test that proves
-- each refusal (crates/store/tests/roles.rs).
--
-- Tables created by later migrations get no grants by default: each such
-- migration grants its table to the roles that need it.
--
-- Immutable rows: nobody is granted UPDATE, DELETE or TRUNCATE on
-- audit_log, and its triggers (0004) refuse them even for the owner.

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

-- Merchants and API keys: the External API authenticates (reads key hashes,
-- never changes them); the back office manages them; the integration
-- service reads merchants only, never key hashes.
grant select on merchants, api_keys to snakepay_external_api;
grant select, insert, update on merchants, api_keys to snakepay_internal_api;
grant select on merchants to snakepay_integration;

-- Back-office tables.
grant select, insert on kyc_reviews to snakepay_internal_api;
grant select, insert, update on refund_requests, dead_letters to snakepay_internal_api;

-- The audit trail: every service appends (insert a row, move the head,
-- which needs select and update on the one head row); only the back office
-- reads it back (search, verify). The services that append cannot read
-- what others appended.
grant insert on audit_log to snakepay_external_api, snakepay_internal_api, snakepay_integration;
grant select on audit_log to snakepay_internal_api;
grant select, update on audit_chain_head to snakepay_external_api, snakepay_internal_api, snakepay_integration;
