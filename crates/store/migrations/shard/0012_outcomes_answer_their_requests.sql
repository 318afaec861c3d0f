-- The integration service stores a waiting request's final answer under
-- its idempotency key in the statement that commits the outcome
-- (idempotency::push_outcome_answer). It may find the key and its stage
-- and write the answer and the stage; it may not read the responses or
-- fingerprints stored there, nor insert or delete keys.
grant select (merchant_id, livemode, key, request_id, recovery_point),
      update (response_status, response_body, recovery_point)
    on idempotency_keys to snakepay_integration;
