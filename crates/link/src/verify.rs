//! Pinning certificate verifiers for both ends of a link.
//!
//! Neither verifier looks at validity dates, names, issuers or chains: trust
//! comes from the pinned Ed25519 key alone, and possession of that key is
//! proven by the TLS 1.3 handshake signature, checked with
//! [`rustls::crypto::verify_tls13_signature`]. TLS 1.2 is refused.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, PeerIncompatible,
    SignatureScheme,
};

use crate::{LinkStats, Pins, bump};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }, followed by
/// the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The Ed25519 public key of an end-entity certificate.
pub(crate) fn ed25519_key_of(cert: &CertificateDer<'_>) -> Result<[u8; 32], String> {
    let ee =
        webpki::EndEntityCert::try_from(cert).map_err(|e| format!("malformed certificate: {e}"))?;
    let spki = ee.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or_else(|| "certificate key is not ed25519".to_owned())?;
    <[u8; 32]>::try_from(raw).map_err(|_| "certificate key is not ed25519".to_owned())
}

fn refuse(stats: &LinkStats, side: &str, reason: &str, key: Option<&[u8; 32]>) -> Error {
    bump(&stats.handshakes_refused);
    let key = key.map(|k| b64(k)).unwrap_or_else(|| "-".to_owned());
    tracing::warn!(side, reason, key = %key, "refused tls peer");
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refused(reason.to_owned()),
    ))))
}

/// The local reason a peer was refused; the peer itself only gets a
/// `bad_certificate` alert.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn schemes() -> Vec<SignatureScheme> {
    vec![SignatureScheme::ED25519]
}

fn verify13(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(PeerIncompatible::NoSignatureSchemesInCommon.into());
    }
    verify_tls13_signature(message, cert, dss, algs)
}

fn no_tls12() -> Result<HandshakeSignatureValid, Error> {
    // Unreachable with our configs (TLS 1.3 only), refused all the same.
    Err(Error::General("tls 1.2 is not accepted".to_owned()))
}

/// Client side: accept the server only if its key is pinned for the party we
/// dialled.
#[derive(Debug)]
pub(crate) struct PinnedServerVerifier {
    pub(crate) expected_party: String,
    pub(crate) pins: Pins,
    pub(crate) stats: Arc<LinkStats>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = match ed25519_key_of(end_entity) {
            Ok(k) => k,
            Err(reason) => return Err(refuse(&self.stats, "client", &reason, None)),
        };
        match self.pins.party_of(&key) {
            Some(p) if p == self.expected_party => Ok(ServerCertVerified::assertion()),
            Some(p) => Err(refuse(
                &self.stats,
                "client",
                &format!(
                    "server key is pinned for party {p}, not {}",
                    self.expected_party
                ),
                Some(&key),
            )),
            None => Err(refuse(
                &self.stats,
                "client",
                &format!("server key for party {} is not pinned", self.expected_party),
                Some(&key),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

/// Server side: client authentication is mandatory; accept any client whose
/// key is pinned (for any party).
#[derive(Debug)]
pub(crate) struct PinnedClientVerifier {
    pub(crate) pins: Pins,
    pub(crate) stats: Arc<LinkStats>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = match ed25519_key_of(end_entity) {
            Ok(k) => k,
            Err(reason) => return Err(refuse(&self.stats, "server", &reason, None)),
        };
        if self.pins.party_of(&key).is_some() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(refuse(
                &self.stats,
                "server",
                "client key is not pinned",
                Some(&key),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_cert() {
        let bad = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(ed25519_key_of(&bad).is_err());
    }
}
