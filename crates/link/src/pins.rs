use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Why a peer's key is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// An agreement in force now names both parties: everything may cross.
    InForce,
    /// Both parties signed an agreement that is not in force now (it lapsed or
    /// has not started): the link exists only to settle envelopes sent while one
    /// was, so that neither side is left not knowing whether one arrived.
    Settling,
}

/// The pinned peers: Ed25519 public key → party id and standing.
///
/// Cheap to clone (shared). The node recomputes the whole map with
/// [`Pins::replace`] whenever agreements change or one lapses, so that only
/// parties with an agreement in force are pinned [`Standing::InForce`]. Every
/// handshake and every inbound request reads the current map.
#[derive(Clone, Default)]
pub struct Pins(Arc<RwLock<PinMap>>);

/// Ed25519 public key → (party, standing).
type PinMap = HashMap<[u8; 32], (String, Standing)>;

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.read();
        let mut parties: Vec<String> = map
            .values()
            .map(|(p, s)| match s {
                Standing::InForce => p.clone(),
                Standing::Settling => format!("{p} (settling)"),
            })
            .collect();
        parties.sort_unstable();
        f.debug_struct("Pins").field("parties", &parties).finish()
    }
}

impl Pins {
    /// Empty pins: every peer is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins built from `map`, every key [`Standing::InForce`].
    pub fn from_map(map: HashMap<[u8; 32], String>) -> Self {
        let pins = Self::new();
        pins.replace(map);
        pins
    }

    /// Replace the whole set of pins atomically, every key [`Standing::InForce`].
    pub fn replace(&self, map: HashMap<[u8; 32], String>) {
        self.replace_with_settling(map, HashMap::new());
    }

    /// Replace the whole set of pins atomically: `in_force` keys for everything,
    /// `settling` keys (unless also in force) only to settle earlier envelopes.
    pub fn replace_with_settling(
        &self,
        in_force: HashMap<[u8; 32], String>,
        settling: HashMap<[u8; 32], String>,
    ) {
        let mut map: PinMap = settling
            .into_iter()
            .map(|(k, p)| (k, (p, Standing::Settling)))
            .collect();
        map.extend(
            in_force
                .into_iter()
                .map(|(k, p)| (k, (p, Standing::InForce))),
        );
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        *guard = map;
    }

    /// The party pinned for `key`, in either standing.
    pub fn party_of(&self, key: &[u8; 32]) -> Option<String> {
        self.read().get(key).map(|(p, _)| p.clone())
    }

    /// The party pinned for `key` and its standing.
    pub fn standing_of(&self, key: &[u8; 32]) -> Option<(String, Standing)> {
        self.read().get(key).cloned()
    }

    /// Whether some key is pinned for `party` under an agreement in force.
    pub fn is_pinned(&self, party: &str) -> bool {
        self.read()
            .values()
            .any(|(p, s)| p == party && *s == Standing::InForce)
    }

    /// Whether a link to `party` may be made at all (in force or settling).
    pub fn can_reach(&self, party: &str) -> bool {
        self.read().values().any(|(p, _)| p == party)
    }

    /// Number of pinned keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PinMap> {
        // A poisoned lock still holds a whole map: `replace` swaps it in one
        // assignment.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}
