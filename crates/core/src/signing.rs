//! Ed25519 identities of parties: public keys as written in agreements
//! (`ed25519:` + base64), secret key files, and signatures over canonical bytes.
//!
//! Randomness is the caller's: a key is made from a 32-byte seed it supplies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::PartyId;

const KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not a public key, expected `ed25519:` followed by 32 bytes in base64")]
    BadPublicKey(String),
    #[error("signature is not 64 bytes of base64")]
    BadSignature,
    #[error("signature does not verify with key `{0}`")]
    Mismatch(String),
    #[error("key file: {0}")]
    BadKeyFile(String),
}

/// A party's public signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPublicKey(s.to_owned());
        let b64 = s.strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
        let bytes = B64.decode(b64).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        VerifyingKey::from_bytes(&arr).map(Self).map_err(|_| bad())
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::BadPublicKey(B64.encode(bytes)))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies a base64 signature over `message`. Strict verification refuses
    /// malleable and small-order signatures, so one message has one valid signature.
    pub fn verify_b64(&self, message: &[u8], signature_b64: &str) -> Result<(), KeyError> {
        let bytes = B64
            .decode(signature_b64.trim())
            .map_err(|_| KeyError::BadSignature)?;
        self.verify(message, &bytes)
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let sig = Signature::from_slice(signature).map_err(|_| KeyError::BadSignature)?;
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| KeyError::Mismatch(self.to_string()))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{KEY_PREFIX}{}", B64.encode(self.0.to_bytes()))
    }
}

/// A party's secret signing key.
#[derive(Clone)]
pub struct PartyKey {
    pub party: PartyId,
    key: SigningKey,
}

impl std::fmt::Debug for PartyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "PartyKey({}, {})", self.party, self.public())
    }
}

impl PartyKey {
    pub fn from_seed(party: PartyId, seed: [u8; 32]) -> Self {
        Self {
            party,
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed, for deriving the node's TLS identity from the same key.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn sign_b64(&self, message: &[u8]) -> String {
        B64.encode(self.sign(message))
    }

    /// The secret key file's text. It is TOML so a person can see whose key it is.
    pub fn to_file(&self) -> String {
        format!(
            "# Liaison signing key of party {party}. Keep it secret.\nparty = \"{party}\"\npublic = \"{public}\"\nsecret = \"{secret}\"\n",
            party = self.party,
            public = self.public(),
            secret = B64.encode(self.key.to_bytes()),
        )
    }

    pub fn from_file(text: &str) -> Result<Self, KeyError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| KeyError::BadKeyFile(e.message().trim_end_matches('.').to_owned()))?;
        let get = |k: &str| {
            table
                .get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| KeyError::BadKeyFile(format!("missing `{k}`, expected a string")))
        };
        let party = PartyId::new(get("party")?).map_err(|e| KeyError::BadKeyFile(e.to_string()))?;
        let secret = B64
            .decode(get("secret")?)
            .map_err(|_| KeyError::BadKeyFile("`secret` is not base64".to_owned()))?;
        let seed: [u8; 32] = secret
            .try_into()
            .map_err(|_| KeyError::BadKeyFile("`secret` is not 32 bytes".to_owned()))?;
        let key = Self::from_seed(party, seed);
        if let Ok(public) = get("public")
            && PublicKey::parse(public)? != key.public()
        {
            return Err(KeyError::BadKeyFile(
                "`public` does not match `secret`".to_owned(),
            ));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 TEST 1: the empty message.
    #[test]
    fn rfc8032_test_1() {
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = PartyKey::from_seed(PartyId::new("ROK").unwrap(), seed);
        assert_eq!(
            hex::encode(key.public().to_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(key.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn key_files_round_trip_and_signatures_verify() {
        let key = PartyKey::from_seed(PartyId::new("USA").unwrap(), [7; 32]);
        let back = PartyKey::from_file(&key.to_file()).unwrap();
        assert_eq!(back.public(), key.public());
        let public = PublicKey::parse(&key.public().to_string()).unwrap();
        let sig = key.sign_b64(b"hello");
        assert!(public.verify_b64(b"hello", &sig).is_ok());
        assert!(public.verify_b64(b"hellO", &sig).is_err());
        assert!(public.verify_b64(b"hello", "not base64!").is_err());
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
        assert!(PartyKey::from_file("garbage").is_err());
    }
}
