-- Webhook endpoints move from the control database to the merchant's shard
-- (shard migration 0002_webhook_endpoints.sql creates them there).
--
-- Why: creating an endpoint must commit atomically with its idempotency
-- record, and idempotency records live on the merchant's shard; and the
-- webhook dispatcher joins events, which live on the shard, with the
-- merchant's endpoints. A table here would need a transaction across two
-- databases for the first and a cross-database join for the second.
--
-- No endpoint was ever written to this table (the API did not serve
-- `/v1/webhook_endpoints` before this migration), so nothing is copied.
-- 0001 is left untouched: applied databases check its checksum.

drop table webhook_endpoints;
