//! The clients' side of TLS (the CLI, the hook client, the shim's link):
//! which certificates an `https://` or `wss://` daemon may show, and what
//! a person is told when its certificate is refused.
//!
//! Trust is Mozilla's roots (webpki-roots, compiled in: the same on every
//! platform) unless `MUSTER_CA_FILE` names a PEM bundle; then the CAs in it
//! alone, as curl's `--cacert` does: a team that runs its own CA trusts
//! exactly that one, and no public CA can vouch for the team's daemon.
//! Crypto is rustls with ring, the one provider in the tree, given
//! explicitly so no process-wide default needs installing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The variable naming a PEM file of the CAs to trust instead of Mozilla's roots.
pub const CA_FILE_VAR: &str = "MUSTER_CA_FILE";

/// `MUSTER_CA_FILE` as this process has it (empty counts as unset).
pub fn ca_file() -> Option<PathBuf> {
    std::env::var_os(CA_FILE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether `url` is one TLS is spoken to (`https://` or `wss://`).
pub fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss")
}

/// The client TLS settings for this process: trust from `MUSTER_CA_FILE`,
/// else Mozilla's roots. The error names the file and what is wrong with it.
pub fn client_config() -> Result<ClientConfig, String> {
    client_config_with(ca_file().as_deref())
}

/// The client TLS settings trusting the CAs in `ca_file`, or Mozilla's
/// roots without one. HTTP/1.1 is the one protocol offered (the daemon
/// speaks no other, and a WebSocket upgrade needs it).
pub fn client_config_with(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let roots = match ca_file {
        Some(path) => roots_from(path)?,
        None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate in the PEM file at `path`, as trust anchors; a file
/// that holds none, or one that cannot be a trust anchor, is an error.
fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let what = || format!("{CA_FILE_VAR} {}", path.display());
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", what()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (PEM `-----BEGIN CERTIFICATE-----` blocks are expected)",
            what()
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} in {} cannot be used: {e}", i + 1, what()))?;
    }
    Ok(roots)
}

/// The TLS failure somewhere in `err`'s causes, said for a person with
/// what to do about it; `None` when the failure was not TLS's.
pub fn failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let cause = rustls_cause(err)?;
    Some(describe(cause, ca_file().as_deref()))
}

/// The first `rustls::Error` among `err` and its causes. An `io::Error`
/// carrying one hides it from `source()`, which skips to the carried
/// error's own source, and hyper's connector puts tokio-rustls's io::Error
/// inside another, so each cause is looked into as well.
fn rustls_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(found) = unwrap_to_rustls(cause) {
            return Some(found);
        }
        next = cause.source();
    }
    None
}

/// `err` itself as a `rustls::Error`, or the one it carries inside
/// `io::Error`s (a few layers at most).
fn unwrap_to_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut layer = err;
    for _ in 0..4 {
        if let Some(tls) = layer.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        layer = layer.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

/// A rustls error as a person needs it: what went wrong and the fix.
pub fn describe(err: &rustls::Error, ca_file: Option<&Path>) -> String {
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the daemon's TLS certificate is not for this address ({err}); use a name it was made for in the URL"
        ),
        rustls::Error::InvalidCertificate(_) => match ca_file {
            None => format!(
                "the daemon's TLS certificate is not trusted ({err}); if your team's CA signed it, set {CA_FILE_VAR} to that CA's PEM file"
            ),
            Some(path) => format!(
                "the daemon's TLS certificate is not trusted ({err}); no CA in {CA_FILE_VAR} ({}) signed it",
                path.display()
            ),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "the daemon does not speak TLS on this port ({err}); use an http:// URL, or serve it with --tls-cert and --tls-key"
        ),
        other => format!("TLS with the daemon failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_urls_are_told_by_their_scheme() {
        // Proves https:// and wss:// (in any case) take TLS and nothing else does.
        assert!(is_tls_url("https://team:7420"));
        assert!(is_tls_url("WSS://team:7420/ws"));
        assert!(!is_tls_url("http://127.0.0.1:7420"));
        assert!(!is_tls_url("ws://127.0.0.1:7420/ws"));
        assert!(!is_tls_url("team:7420"));
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_named_with_why() {
        // Proves a missing CA file, one with no certificate, and one with a
        // broken PEM block each get an error naming the variable and the file.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config_with(Some(&missing)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot read MUSTER_CA_FILE {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert_eq!(
            client_config_with(Some(&empty)).unwrap_err(),
            format!(
                "MUSTER_CA_FILE {} holds no certificate (PEM `-----BEGIN CERTIFICATE-----` blocks are expected)",
                empty.display()
            )
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config_with(Some(&broken)).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "MUSTER_CA_FILE {} is not valid PEM: ",
                broken.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        // Proves an untrusted certificate points at MUSTER_CA_FILE (or at the
        // one set), a wrong name at the URL, and a plain-HTTP port at http://.
        let untrusted = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            describe(&untrusted, None),
            "the daemon's TLS certificate is not trusted (invalid peer certificate: UnknownIssuer); if your team's CA signed it, set MUSTER_CA_FILE to that CA's PEM file"
        );
        assert_eq!(
            describe(&untrusted, Some(Path::new("/etc/team-ca.pem"))),
            "the daemon's TLS certificate is not trusted (invalid peer certificate: UnknownIssuer); no CA in MUSTER_CA_FILE (/etc/team-ca.pem) signed it"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(describe(&name, None).ends_with("use a name it was made for in the URL"));
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(describe(&plain, None).starts_with("the daemon does not speak TLS on this port"));
    }

    #[test]
    fn a_rustls_error_is_found_inside_io_errors() {
        // Proves the cause is found where hyper and tokio-rustls put it (as
        // reqwest showed it): an io::Error carrying an io::Error carrying
        // it, whose source() would skip past both.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let outer = std::io::Error::other(io);
        let found = rustls_cause(&outer).map(ToString::to_string);
        assert_eq!(
            found.as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        let other = std::io::Error::other("connection refused");
        assert!(rustls_cause(&other).is_none());
    }
}
