//! Placeholder until the Merkle module lands.
