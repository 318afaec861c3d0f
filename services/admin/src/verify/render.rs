//! What `snakepay-admin verify` prints: a table for people, JSON for
//! machines.

use std::io::Write;

use super::Report;

/// A summary line, then one row per violation (kind, resource, reason).
pub fn write_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let checked = &report.checked;
    let mut scope = format!(
        "{} shard(s), {} payment intent(s), {} attempt(s), {} refund(s), {} idempotency key(s) that created intents",
        checked.shards,
        checked.payment_intents,
        checked.attempts,
        checked.refunds,
        checked.idempotency_keys_with_intents,
    );
    if report.skipped.is_empty() {
        scope.push_str(&format!(
            ", {} processor operation(s) and {} authorization(s)",
            checked.processor_operations, checked.processor_authorizations
        ));
    }
    let verdict = match report.violations.len() {
        0 => "no violations".to_owned(),
        1 => "1 violation".to_owned(),
        n => format!("{n} violations"),
    };
    writeln!(
        out,
        "verify: {verdict} (checked {scope}; settle margin {} s, reconciliation window {} s)",
        report.settle_seconds, report.reconcile_window_seconds
    )?;
    for skipped in &report.skipped {
        writeln!(out, "skipped: {skipped}")?;
    }
    if report.violations.is_empty() {
        return Ok(());
    }
    let kind_width = report
        .violations
        .iter()
        .map(|v| v.kind.as_str().len())
        .chain(["KIND".len()])
        .max()
        .unwrap_or_default();
    let resource_width = report
        .violations
        .iter()
        .map(|v| v.resource.chars().count())
        .chain(["RESOURCE".len()])
        .max()
        .unwrap_or_default();
    writeln!(out)?;
    writeln!(
        out,
        "{:kind_width$}  {:resource_width$}  REASON",
        "KIND", "RESOURCE"
    )?;
    for violation in &report.violations {
        writeln!(
            out,
            "{:kind_width$}  {:resource_width$}  {}",
            violation.kind.as_str(),
            violation.resource,
            violation.reason
        )?;
    }
    Ok(())
}

/// The report as one JSON object; `clean` says whether it found nothing.
pub fn write_json(out: &mut impl Write, report: &Report) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "clean": report.is_clean(),
        "violations": report.violations,
        "checked": report.checked,
        "skipped": report.skipped,
        "settle_seconds": report.settle_seconds,
        "reconcile_window_seconds": report.reconcile_window_seconds,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    Ok(())
}
