//! Stripe JSON representations of our records: what API responses, event
//! snapshots and webhook bodies contain. One function per object, shared by
//! the External API and the integration service (which writes the events of
//! the outcomes it commits), so an object looks the same wherever it is seen.

use crate::charges::ChargeView;
use crate::customers::CustomerRecord;
use crate::events::EventRecord;
use crate::intents::IntentRecord;
use crate::refunds::RefundRecord;
use serde_json::{Value, json};
use snakepay_domain::payment_intent::{CardErrorCode, NextAction, PaymentError};

fn enum_text<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn card_error_code(code: CardErrorCode) -> Value {
    enum_text(&code)
}

fn last_payment_error(error: &PaymentError) -> Value {
    json!({
        "type": "card_error",
        "code": card_error_code(error.code),
        "decline_code": error.decline_code,
        "message": error.message,
    })
}

fn next_action(action: &NextAction) -> Value {
    match action {
        NextAction::RedirectToUrl { url, return_url } => json!({
            "type": "redirect_to_url",
            "redirect_to_url": { "url": url, "return_url": return_url },
        }),
    }
}

pub fn payment_intent(record: &IntentRecord) -> Value {
    let intent = &record.intent;
    json!({
        "id": intent.id.to_string(),
        "object": "payment_intent",
        "amount": intent.amount.minor(),
        "amount_capturable": intent.amount_capturable,
        "amount_received": intent.amount_received,
        "canceled_at": intent.canceled_at,
        "cancellation_reason": intent.cancellation_reason.as_ref().map(enum_text),
        "capture_method": enum_text(&intent.capture_method),
        "client_secret": record.client_secret,
        "confirmation_method": "automatic",
        "created": intent.created,
        "currency": intent.amount.currency().code(),
        "customer": record.customer.map(|c| c.to_string()),
        "description": record.description,
        "last_payment_error": intent.last_payment_error.as_ref().map(last_payment_error),
        "latest_charge": intent.latest_charge.map(|c| c.to_string()),
        "livemode": record.livemode,
        "metadata": record.metadata,
        "next_action": intent.next_action.as_ref().map(next_action),
        "payment_method": intent.payment_method.map(|p| p.to_string()),
        "payment_method_types": record.payment_method_types,
        "receipt_email": record.receipt_email,
        "statement_descriptor": record.statement_descriptor,
        "statement_descriptor_suffix": record.statement_descriptor_suffix,
        "status": intent.status.as_str(),
    })
}

pub fn customer(record: &CustomerRecord) -> Value {
    json!({
        "id": record.id.to_string(),
        "object": "customer",
        "address": record.address,
        "balance": 0,
        "created": record.created,
        "currency": null,
        "delinquent": false,
        "description": record.description,
        "email": record.email,
        "livemode": record.livemode,
        "metadata": record.metadata,
        "name": record.name,
        "phone": record.phone,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
    })
}

pub fn event(record: &EventRecord, idempotency_key: Option<&str>) -> Value {
    json!({
        "id": record.id.to_string(),
        "object": "event",
        "api_version": record.api_version,
        "created": record.created,
        "data": { "object": record.object },
        "livemode": record.livemode,
        "pending_webhooks": 0,
        "request": { "id": record.request_id, "idempotency_key": idempotency_key },
        "type": record.event_type,
    })
}

pub fn refund(record: &RefundRecord) -> Value {
    let refund = &record.refund;
    json!({
        "id": refund.id.to_string(),
        "object": "refund",
        "amount": refund.amount.minor(),
        "balance_transaction": null,
        "charge": refund.charge.to_string(),
        "created": refund.created,
        "currency": refund.amount.currency().code(),
        "failure_reason": refund.failure_reason,
        "metadata": record.metadata,
        "payment_intent": refund.payment_intent.to_string(),
        "reason": refund.reason.as_ref().map(enum_text),
        "receipt_number": null,
        "status": refund.status.as_str(),
    })
}

pub fn charge(view: &ChargeView) -> Value {
    let status = match view.attempt_status.as_str() {
        "approved" => "succeeded",
        "declined" | "superseded" => "failed",
        _ => "pending",
    };
    // The intent's totals are this charge's only while it is the latest.
    let (captured, refunded) = if view.is_latest {
        (view.amount_received, view.amount_refunded)
    } else {
        (0, 0)
    };
    json!({
        "id": view.id,
        "object": "charge",
        "amount": view.amount,
        "amount_captured": captured,
        "amount_refunded": refunded,
        "balance_transaction": null,
        "captured": captured > 0,
        "created": view.created,
        "currency": view.currency,
        "customer": view.customer,
        "description": view.description,
        "failure_code": view.failure_code,
        "failure_message": view.failure_message,
        "livemode": view.livemode,
        "metadata": view.metadata,
        "paid": status == "succeeded",
        "payment_intent": view.payment_intent,
        "payment_method": view.payment_method,
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": view.card_brand,
                "last4": view.card_last4,
                "exp_month": view.card_exp_month,
                "exp_year": view.card_exp_year,
                "fingerprint": view.card_fingerprint,
            },
        },
        "refunded": captured > 0 && refunded == captured,
        "status": status,
    })
}

pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}
