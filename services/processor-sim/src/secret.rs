//! [`SecretString`]: a request field that holds card data (number, CVC).
//!
//! Deserializes like a string, prints as `****`, is wiped on drop, and comes
//! out only through [`SecretString::expose`], so a reviewer can find every use.

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|value| SecretString(Zeroizing::new(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret: SecretString = serde_json::from_str("\"4242424242424242\"").unwrap();
        assert_eq!(format!("{secret:?}"), "****");
        assert_eq!(secret.expose(), "4242424242424242");
    }
}
