-- Recording an authorization updates its attempt (status, processor
-- reference) and forgets the card's CVC (payment_methods). Neither update
-- needs a new index entry if the new row version fits on its page (a HOT
-- update), but two things prevented it (docs/performance.md):
--
-- - payment_attempts_processor_reference indexed the reference that this
--   very update sets, so every outcome wrote an entry into all five indexes
--   of payment_attempts. Nothing looks attempts up by it: processor
--   notifications name our attempt (its primary key), captures and refunds
--   read the reference from the attempt.
-- - Pages were filled to the brim by inserts, leaving no room for the new
--   version. A fill factor keeps a tenth of every page free for it.
drop index payment_attempts_processor_reference;
alter table payment_attempts set (fillfactor = 90);
alter table payment_methods set (fillfactor = 90);
