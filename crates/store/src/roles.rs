//! The services' PostgreSQL roles (least privilege, PCI DSS 7.2).
//!
//! The migrations (`0008_service_roles.sql` in the control database,
//! `0007_service_roles.sql` in the shards) create one role per service and
//! grant it only what its code needs; the role that runs the migrations owns
//! every table and is the only one that changes the schema. Each service
//! names its role in its configuration section (`database_user`, defaulting
//! to the constant here) and [`crate::Store::connect_lazy_as`] connects as
//! it, with the password of the configured URLs.

/// The External API: authenticates keys, seals cards, writes payments. It
/// can never read sealed card data or webhook signing secrets back.
pub const EXTERNAL_API: &str = "snakepay_external_api";
/// The back office: merchants, keys, KYC, refund approvals, dead letters,
/// the audit trail; reads payments' clear columns.
pub const INTERNAL_API: &str = "snakepay_internal_api";
/// The payment pipeline: the only role that reads sealed card data (it
/// decrypts for the processor) and webhook signing secrets.
pub const INTEGRATION: &str = "snakepay_integration";

/// Every service role, as the migrations create them.
pub const ALL: [&str; 3] = [EXTERNAL_API, INTERNAL_API, INTEGRATION];

/// PostgreSQL truncates identifiers beyond this many bytes.
const MAX_ROLE_NAME_BYTES: usize = 63;

/// Whether `user` is a plain role name (lower-case letters, digits and `_`,
/// not starting with a digit), so a configuration cannot smuggle anything
/// else into the connection.
pub fn is_valid_role_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_ROLE_NAME_BYTES
        && !user.starts_with(|c: char| c.is_ascii_digit())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for name in ALL {
            assert!(is_valid_role_name(name), "{name}");
        }
        for bad in ["", "1abc", "Snakepay", "a b", "a;drop", &"a".repeat(64)] {
            assert!(!is_valid_role_name(bad), "{bad}");
        }
    }
}
