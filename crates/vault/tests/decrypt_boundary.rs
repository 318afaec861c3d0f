//! Only the integration service links the code that opens sealed card data
//! (PCI DSS 7.2): the vault's `decrypt` feature may be enabled, as a normal
//! dependency, only by the integration service and by the webhook crate it
//! runs; and nothing else may depend on either of them (it would inherit
//! the feature). Dev-dependencies (tests) are exempt. Reads every
//! workspace member's `Cargo.toml`, so a new dependency line that crosses
//! the boundary fails here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

/// Packages allowed to build the vault with `decrypt`.
const MAY_DECRYPT: &[&str] = &["snakepay-integration", "snakepay-webhooks"];
/// Packages that pull in `decrypt` for whoever depends on them.
const CARRY_DECRYPT: &[&str] = &["snakepay-integration", "snakepay-webhooks"];

fn members() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for group in ["crates", "services"] {
        for entry in std::fs::read_dir(root.join(group)).unwrap() {
            let manifest = entry.unwrap().path().join("Cargo.toml");
            if manifest.exists() {
                out.push(manifest);
            }
        }
    }
    out
}

/// `(package name, normal dependency lines)` of a manifest: the lines of
/// `[dependencies]` and of target-specific `[target.….dependencies]`.
fn normal_dependencies(text: &str) -> (String, Vec<String>) {
    let mut name = String::new();
    let mut section = String::new();
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section == "[package]" && line.starts_with("name") {
            name = line.split('"').nth(1).unwrap().to_owned();
        }
        let normal = section == "[dependencies]"
            || (section.starts_with("[target.") && section.ends_with(".dependencies]"));
        if normal && !line.is_empty() && !line.starts_with('#') {
            lines.push(line.to_owned());
        }
    }
    (name, lines)
}

#[test]
fn only_the_integration_service_can_link_decryption() {
    let manifests = members();
    assert!(manifests.len() >= 10, "found {manifests:?}");
    let mut seen_integration = false;
    for manifest in manifests {
        let (package, dependencies) =
            normal_dependencies(&std::fs::read_to_string(&manifest).unwrap());
        seen_integration |= package == "snakepay-integration";
        for line in dependencies {
            let dependency = line.split(['=', ' ', '.']).next().unwrap_or_default();
            if dependency == "snakepay-vault" && line.contains("decrypt") {
                assert!(
                    MAY_DECRYPT.contains(&package.as_str()),
                    "{package} enables the vault's `decrypt` feature: {line}"
                );
            }
            if CARRY_DECRYPT.contains(&dependency) {
                assert!(
                    MAY_DECRYPT.contains(&package.as_str()),
                    "{package} depends on {dependency}, which links decryption: {line}"
                );
            }
        }
    }
    assert!(
        seen_integration,
        "the scan must see the integration service"
    );
}

#[test]
fn the_manifest_reader_sees_the_integration_services_decrypt_line() {
    // The check above would pass vacuously if it read no dependency lines.
    let (package, lines) = normal_dependencies(
        "[package]\nname = \"x\"\n[dependencies]\nsnakepay-vault = { workspace = true, features = [\"decrypt\"] }\n[dev-dependencies]\nsnakepay-integration.workspace = true\n",
    );
    assert_eq!(package, "x");
    assert_eq!(lines.len(), 1);
    let integration =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services/integration/Cargo.toml");
    let (name, lines) = normal_dependencies(&std::fs::read_to_string(integration).unwrap());
    assert_eq!(name, "snakepay-integration");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("snakepay-vault") && l.contains("decrypt")),
        "{lines:?}"
    );
}
