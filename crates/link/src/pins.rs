use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The pinned peers: Ed25519 public key → party id.
///
/// Cheap to clone (shared). The node recomputes the whole map with
/// [`Pins::replace`] whenever agreements change or one lapses, so that only
/// parties with an agreement in force are pinned. Every handshake and every
/// inbound request reads the current map.
#[derive(Clone, Default)]
pub struct Pins(Arc<RwLock<HashMap<[u8; 32], String>>>);

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.read();
        let mut parties: Vec<&str> = map.values().map(String::as_str).collect();
        parties.sort_unstable();
        f.debug_struct("Pins").field("parties", &parties).finish()
    }
}

impl Pins {
    /// Empty pins: every peer is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins built from `map`.
    pub fn from_map(map: HashMap<[u8; 32], String>) -> Self {
        Self(Arc::new(RwLock::new(map)))
    }

    /// Replace the whole set of pins atomically.
    pub fn replace(&self, map: HashMap<[u8; 32], String>) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        *guard = map;
    }

    /// The party pinned for `key`, if any.
    pub fn party_of(&self, key: &[u8; 32]) -> Option<String> {
        self.read().get(key).cloned()
    }

    /// Whether some key is pinned for `party`.
    pub fn is_pinned(&self, party: &str) -> bool {
        self.read().values().any(|p| p == party)
    }

    /// Number of pinned keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], String>> {
        // A poisoned lock still holds a whole map: `replace` swaps it in one
        // assignment.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}
