//! Liaison's pure domain core.
//!
//! Everything here is a pure function of its inputs: agreements, requests and an
//! instant passed in by the caller. No clock, no IO, no async runtime. The edges
//! (`store`, `link`, `node`, `cli`) feed this crate and act on what it decides.

pub mod agreement;
pub mod audit;
pub mod canonical;
pub mod delivery;
pub mod diagnostic;
pub mod envelope;
pub mod hotline;
pub mod ids;
pub mod label;
pub mod lifecycle;
pub mod merkle;
pub mod parse;
pub mod precedence;
pub mod release;
pub mod signed_document;
pub mod signing;
mod source;
