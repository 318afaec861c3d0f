-- The events table is a payment's history: every event is written there with
-- the change itself, and the back office reads it by the object it is about
-- (snakepay_store::search::payment_story). event_history only copied it,
-- filled by the recorder from one broker announcement per event, at about a
-- quarter of a checkout's CPU (docs/performance.md). Events are no longer
-- announced; every row here is a copy of a row in events.
drop table event_history;
