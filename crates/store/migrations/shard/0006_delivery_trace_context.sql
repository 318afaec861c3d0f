-- A webhook delivery continues the trace of the event it announces: the
-- fan-out stores the W3C `traceparent` of the message it handled, and each
-- attempt's span is its child, so one trace runs from the API request to the
-- merchant's webhook (docs/observability.md). Not an identifier of anything
-- of the merchant's; 55 characters in version 00.
alter table webhook_deliveries
    add column traceparent text check (length(traceparent) <= 100);
