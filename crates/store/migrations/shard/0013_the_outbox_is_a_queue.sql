-- The outbox is a queue, not a history: the relay deletes the rows it
-- published, in the transaction that waits for the broker's confirms
-- (snakepay_bus::relay). Before, it marked them `published_at = now()` and
-- kept them forever:
--
-- - the table grew by one row per command, never pruned;
-- - marking wrote a new version of every row and an index entry for it
--   (the partial index on unpublished rows names `published_at`, so the
--   update could never be HOT), and took a locking select before it.
--
-- A delete only stamps the row dead. What happened to a payment is in its
-- events (the history, 0010), its attempts and its ledger; a command is
-- the request to do it, and once the broker holds it the outbox has
-- nothing left to add. Every row left here is unpublished, so the primary
-- key is the relay's index.
delete from outbox where published_at is not null;
drop index outbox_unpublished;
alter table outbox drop column published_at;

-- The relay deletes what it published. It keeps `update`: locking rows
-- `for update skip locked` (relays side by side take disjoint batches)
-- needs it.
grant delete on outbox to snakepay_integration;
