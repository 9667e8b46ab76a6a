use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::LinkError;

/// A node's TLS identity: the party's Ed25519 key and a self-signed
/// certificate for it.
///
/// The certificate has CN = party id, one DNS SAN `liaison-<party>.invalid`
/// (party id lowered to `[a-z0-9-]`), validity 1970-01-01..9999-12-31 and a
/// serial derived from the public key, so it is fully deterministic from the
/// seed and party. Peers never check its dates, names or issuer: they check
/// only that its key is pinned (see the crate docs).
#[derive(Clone)]
pub struct Identity {
    party: String,
    public_key: [u8; 32],
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("party", &self.party)
            .field("public_key", &crate::verify::b64(&self.public_key))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Build the identity of `party` from its 32-byte Ed25519 seed (the
    /// secret key as in RFC 8032).
    pub fn from_ed25519_seed(party: &str, seed: [u8; 32]) -> Result<Identity, LinkError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public_key = signing.verifying_key().to_bytes();
        let pkcs8 = signing
            .to_pkcs8_der()
            .map_err(|e| LinkError::Cert(format!("cannot encode key as pkcs#8: {e}")))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());

        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| LinkError::Cert(format!("cannot load key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(vec![san_for(party)])
            .map_err(|e| LinkError::Cert(format!("bad subject name: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, party);
        params.not_before = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after = rcgen::date_time_ymd(9999, 12, 31);
        // Deterministic, positive, non-zero serial: 0x01 || first 15 key bytes.
        let mut serial = vec![0x01];
        serial.extend(public_key.iter().take(15));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| LinkError::Cert(format!("cannot sign certificate: {e}")))?;
        let cert_der: CertificateDer<'static> = cert.der().clone();

        let signer = crate::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8))
            .map_err(LinkError::Tls)?;
        let certified = CertifiedKey::new(vec![cert_der], signer);

        // Sanity: what we present is what peers will pin.
        let leaf = certified
            .end_entity_cert()
            .map_err(|e| LinkError::Cert(format!("no certificate: {e}")))?;
        let presented = crate::verify::ed25519_key_of(leaf).map_err(LinkError::Cert)?;
        if presented != public_key {
            return Err(LinkError::Cert(
                "certificate key differs from identity key".to_owned(),
            ));
        }

        Ok(Identity {
            party: party.to_owned(),
            public_key,
            certified: Arc::new(certified),
        })
    }

    /// The party id this identity speaks for.
    pub fn party(&self) -> &str {
        &self.party
    }

    /// The Ed25519 public key, as pinned in agreements.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// DER of the self-signed certificate presented in TLS.
    pub fn certificate_der(&self) -> &[u8] {
        self.certified
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// An impostor for tests: presents `victim`'s certificate but signs with
    /// `own`'s key.
    #[cfg(test)]
    pub(crate) fn impostor(victim: &Identity, own: &Identity) -> Identity {
        Identity {
            party: victim.party.clone(),
            public_key: victim.public_key,
            certified: Arc::new(CertifiedKey::new(
                victim.certified.cert.clone(),
                Arc::clone(&own.certified.key),
            )),
        }
    }
}

fn san_for(party: &str) -> String {
    let label: String = party
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "liaison.invalid".to_owned()
    } else {
        format!("liaison-{label}.invalid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_key_matches() {
        let a = Identity::from_ed25519_seed("ministry of defence", [7; 32]).unwrap();
        let b = Identity::from_ed25519_seed("ministry of defence", [7; 32]).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.certificate_der(), b.certificate_der());
        let expected = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes();
        assert_eq!(a.public_key(), expected);
        assert!(!format!("{a:?}").contains("certified"));
    }

    #[test]
    fn san_is_sanitised() {
        assert_eq!(san_for("CERT-EU"), "liaison-cert-eu.invalid");
        assert_eq!(san_for("é"), "liaison.invalid");
    }
}
