-- Webhook deliveries are now created with their event, in the writer's
-- transaction (snakepay_store::events::record), instead of by a consumer of
-- an event queue in the integration service. Every service that records
-- events therefore inserts deliveries; it still cannot read, change or
-- delete them (the dispatcher's, in the integration service, can).
grant insert on webhook_deliveries to snakepay_external_api, snakepay_internal_api;
