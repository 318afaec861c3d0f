-- Per-merchant rate limits: requests per second per API key and endpoint
-- class, for each mode. Null: the deployment's default for the mode
-- ([external_api] rate_limit_live_per_second / rate_limit_test_per_second,
-- 100 and 25 as on Stripe). Whoever changes them makes the API-key cache
-- forget the merchant's keys, as for a KYC change.
alter table merchants
    add column rate_limit_live_per_second integer
        check (rate_limit_live_per_second > 0 and rate_limit_live_per_second <= 100000),
    add column rate_limit_test_per_second integer
        check (rate_limit_test_per_second > 0 and rate_limit_test_per_second <= 100000);
