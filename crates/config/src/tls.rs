//! The extra certificate authority of a Redis or AMQP connection, named in
//! its URL: `rediss://host:6380/0?cacertfile=/etc/snakepay/ca.pem` or
//! `amqps://user:pass@host:5671/vhost?cacertfile=/etc/snakepay/ca.pem`
//! (`cacertfile` is the RabbitMQ URI specification's name; PostgreSQL has
//! its own, `sslrootcert`, which sqlx reads). Keeping it in the URL keeps
//! every connection's settings in one value.

use std::path::PathBuf;

use url::Url;

/// The query parameter that names a PEM file of trusted authorities.
pub const CA_FILE_PARAMETER: &str = "cacertfile";

/// Splits `url` into the URL the client library gets (without
/// `cacertfile`) and the CA file, if one is named.
pub fn split_ca_file(url: &Url) -> (Url, Option<PathBuf>) {
    let mut ca_file = None;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(name, value)| {
            if name == CA_FILE_PARAMETER {
                ca_file = Some(PathBuf::from(value.as_ref()));
                None
            } else {
                Some((name.into_owned(), value.into_owned()))
            }
        })
        .collect();
    let mut stripped = url.clone();
    if kept.is_empty() {
        stripped.set_query(None);
    } else {
        stripped.query_pairs_mut().clear().extend_pairs(kept);
    }
    (stripped, ca_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_is_taken_out_and_other_parameters_kept() {
        let url = Url::parse("amqps://u:p@broker:5671/%2f?heartbeat=10&cacertfile=%2Fetc%2Fca.pem")
            .unwrap();
        let (stripped, ca) = split_ca_file(&url);
        assert_eq!(
            stripped.as_str(),
            "amqps://u:p@broker:5671/%2f?heartbeat=10"
        );
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
        let url = Url::parse("rediss://cache:6380/0?cacertfile=/tmp/ca.pem").unwrap();
        let (stripped, ca) = split_ca_file(&url);
        assert_eq!(stripped.as_str(), "rediss://cache:6380/0");
        assert_eq!(ca, Some(PathBuf::from("/tmp/ca.pem")));
        let url = Url::parse("redis://cache:6379/0").unwrap();
        assert_eq!(split_ca_file(&url), (url.clone(), None));
    }
}
