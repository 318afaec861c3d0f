-- KYC decisions for the back office (Internal API): who decided what, why,
-- and when. The merchant row keeps the latest decision; kyc_reviews keeps
-- every one (the back office only ever inserts them), so a verification
-- can always be traced to a reviewer.

alter table merchants
    add column kyc_reviewed_by text check (length(kyc_reviewed_by) <= 200),
    add column kyc_reason      text check (length(kyc_reason) <= 2000),
    add column kyc_reviewed_at bigint,                 -- Unix seconds
    add column updated         bigint;                 -- Unix seconds, last change by the back office

create table kyc_reviews (
    id           bigserial primary key,
    merchant_id  text not null references merchants (id),
    from_status  text not null,
    to_status    text not null check (to_status in ('pending', 'verified', 'rejected')),
    reviewer     text not null check (length(reviewer) between 1 and 200),
    reason       text check (length(reason) <= 2000),
    at           bigint not null                      -- Unix seconds
);
create index kyc_reviews_merchant on kyc_reviews (merchant_id, id);
