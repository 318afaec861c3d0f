//! `snakepay-admin audit verify`: recomputes the audit trail's hash chain.

use std::io::Write;

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
