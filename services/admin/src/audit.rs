//! `snakepay-admin audit verify`: recomputes the audit trail's hash chain;
//! [`record`]: the CLI's own security-relevant actions, appended to it.

use std::io::Write;

use anyhow::Context;

use snakepay_store::Store;
use snakepay_store::audit;

/// Prints the verification as JSON; fails (non-zero exit) when the chain
/// is broken, so a scheduled job can alert on it.
pub async fn verify(store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    let verification = audit::verify_chain(store.control()).await?;
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "intact": verification.intact(),
            "verified_rows": verification.verified_rows,
            "first_break": verification.first_break,
        })
    )?;
    if let Some(first_break) = verification.first_break {
        anyhow::bail!("the audit trail is broken: {first_break:?}");
    }
    Ok(())
}

/// Who runs the CLI: the operating-system user (the cloud runs it as a
/// one-off task whose user names the job), with the role `admin-cli`.
fn operator() -> audit::Actor {
    let subject = std::env::var("SNAKEPAY_ADMIN_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .map(|name| {
            name.trim()
                .chars()
                .take(MAX_SUBJECT_CHARS)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    audit::Actor {
        subject,
        role: "admin-cli".to_owned(),
    }
}

/// `audit_log.actor_subject`'s limit.
const MAX_SUBJECT_CHARS: usize = 200;

/// Appends one of the CLI's security-relevant actions (key rotation and
/// retirement, API keys issued) to the audit trail, with its outcome. The
/// action already happened: a failed append is reported, and the command
/// fails so the operator knows the trail misses it.
pub async fn record(
    store: &Store,
    action: &str,
    resource: Option<&str>,
    outcome: &str,
    details: &serde_json::Value,
) -> anyhow::Result<()> {
    let origin = audit::this_host();
    audit::append(
        store.control(),
        &audit::NewEntry {
            actor: &operator(),
            action,
            resource,
            outcome,
            origin: origin.as_deref(),
            details,
        },
    )
    .await
    .map(|_| ())
    .with_context(|| format!("recording {action} in the audit trail"))
}
