-- Forgetting a CVC after authorization (attempts::forget_cvc_unless_needed)
-- asks whether another attempt still waits to authorize with the same
-- payment method. Without this index that question scanned every attempt of
-- the shard, once per payment outcome: it was the costliest statement of a
-- checkout (docs/performance.md). A plain index, not one restricted by
-- status, so updating an attempt's status stays a HOT update.
create index payment_attempts_payment_method on payment_attempts (payment_method_id);
