//! `snakepay-admin token`: the local staff-token signing key and tokens
//! signed with it, for the Internal API (development only: production
//! tokens come from the identity provider whose JWKS the API is given).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use snakepay_internal_api::config::InternalApiSection;
use snakepay_internal_api::tokens::{self, Role, TokenRequest};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create the local signing key and its JWKS (the paths in
    /// `[internal_api]`), unless they exist.
    Init,
    /// Sign a staff token for the Internal API.
    Issue {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Who the token is for (the audit trail's actor).
        #[arg(long)]
        subject: String,
        /// Record a multi-factor login (needed for API keys and dead letters).
        #[arg(long)]
        mfa: bool,
        /// Lifetime: seconds, or with a unit (`30m`, `8h`); at most 12h.
        #[arg(long, default_value = "8h")]
        ttl: String,
    },
}

fn paths(section: Option<&InternalApiSection>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let section = section.context("the configuration has no [internal_api] section")?;
    let key = section
        .token_signing_key_path
        .clone()
        .context("internal_api.token_signing_key_path is not set: tokens come from the identity provider here")?;
    let jwks = tokens::jwks_file(&section.jwks_source()).context(
        "internal_api.jwks is a URL: the identity provider issues tokens, not this command",
    )?;
    Ok((key, jwks))
}

/// `8h`, `30m`, `45s` or plain seconds.
pub fn parse_ttl(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((index, 'h')) => (text.get(..index).unwrap_or_default(), 3600),
        Some((index, 'm')) => (text.get(..index).unwrap_or_default(), 60),
        Some((index, 's')) => (text.get(..index).unwrap_or_default(), 1),
        _ => (text, 1),
    };
    let value: i64 = digits
        .parse()
        .with_context(|| format!("--ttl {text:?} is not a duration such as 8h, 30m or 3600"))?;
    anyhow::ensure!(value > 0, "--ttl must be positive");
    Ok(value.saturating_mul(unit))
}

pub fn run(
    section: Option<&InternalApiSection>,
    command: TokenCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (key_path, jwks_path) = paths(section)?;
    match command {
        TokenCommand::Init => {
            let (key, created) = tokens::ensure_signing_key(&key_path, &jwks_path)?;
            writeln!(
                out,
                "{}",
                serde_json::json!({ "signing_key": key_path, "jwks": jwks_path, "kid": key.kid(), "created": created })
            )?;
        }
        TokenCommand::Issue {
            role,
            subject,
            mfa,
            ttl,
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role:?}: use viewer, operator or admin"))?;
            let ttl_seconds = parse_ttl(&ttl)?;
            let (key, _) = tokens::ensure_signing_key(&key_path, &jwks_path)?;
            let section = section.context("no [internal_api] section")?;
            let now = snakepay_internal_api::now();
            let token = key.issue(&TokenRequest {
                issuer: &section.token_issuer,
                audience: &section.token_audience,
                subject: &subject,
                role,
                mfa,
                now,
                ttl_seconds,
            })?;
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "token": token,
                    "subject": subject,
                    "role": role.as_str(),
                    "mfa": mfa,
                    "expires_at": now + ttl_seconds,
                })
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_with_or_without_a_unit() {
        assert_eq!(parse_ttl("8h").unwrap(), 8 * 3600);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("0h").is_err());
    }
}
