//! Delivery decisions as pure functions of state and `now`: when a retry is due, whether
//! a waiting envelope must bounce, what the receiver decides about an arriving one.
//!
//! The node drives these; `link` moves bytes and `store` keeps them.

use jiff::Timestamp;

use crate::envelope::{Envelope, Header};
use crate::ids::PartyId;
use crate::label::Label;
use crate::release::{AgreementSet, Consent, Decision, ReleaseRequest, decide};

/// Exponential backoff with jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_delay_ms_min: i64,
    pub retry_delay_ms_max: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_delay_ms_min: 100,
            retry_delay_ms_max: 30_000,
        }
    }
}

impl RetryPolicy {
    /// When the next attempt is due after `attempts` failures. `jitter` is a random
    /// number from the caller; half the delay is fixed and half is jitter, so peers that
    /// failed together do not retry together.
    pub fn next_attempt_ms(&self, now_ms: i64, attempts: u32, jitter: u64) -> i64 {
        let exp = attempts.saturating_sub(1).min(30);
        let delay = self
            .retry_delay_ms_min
            .saturating_mul(1i64 << exp)
            .min(self.retry_delay_ms_max)
            .max(1);
        let half = delay / 2;
        let spread = u64::try_from(delay - half).unwrap_or(1).max(1);
        let j = i64::try_from(jitter % spread).unwrap_or(0);
        now_ms.saturating_add(half + j)
    }
}

/// The sender's check before each attempt: the decision at acceptance may no longer
/// hold (an agreement lapsed while the envelope waited). `Err` carries the reasons to
/// bounce with.
pub fn still_releasable(
    set: &AgreementSet,
    header: &Header,
    consents: &[Consent],
    now: Timestamp,
) -> Decision {
    decide(
        set,
        &ReleaseRequest {
            from: &header.from,
            to: &header.to,
            label: &header.label,
            originator: Some(&header.originator),
            consents,
        },
        now,
    )
}

/// What the receiver makes of an arriving envelope whose signature already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Store it, marked with this label in the receiver's scale.
    Accept {
        receiver_label: Label,
        decision: Decision,
    },
    /// Refuse it: the receiver's own decision denies, or the envelope claims to come from
    /// a party other than the one that connected, or is not addressed to us.
    Refuse { reasons: Vec<String> },
}

/// Rule 2: the receiver re-runs the decision with its own agreements at its own `now`,
/// and checks that the envelope is for this node and from the connected peer.
pub fn on_arrival(
    set: &AgreementSet,
    me: &PartyId,
    peer: &PartyId,
    env: &Envelope,
    consents: &[Consent],
    now: Timestamp,
) -> Arrival {
    let h = &env.header;
    if h.from.party_str() != peer.as_str() {
        return Arrival::Refuse {
            reasons: vec![format!(
                "envelope claims to come from `{}` but was delivered by `{peer}`",
                h.from
            )],
        };
    }
    if h.to.party_str() != me.as_str() {
        return Arrival::Refuse {
            reasons: vec![format!(
                "envelope is addressed to `{}`, not to a desk of `{me}`",
                h.to
            )],
        };
    }
    if !set.knows_desk(h.to.as_str()) {
        return Arrival::Refuse {
            reasons: vec![format!(
                "desk `{}` is not declared by any agreement here",
                h.to
            )],
        };
    }
    let d = decide(
        set,
        &ReleaseRequest {
            from: &h.from,
            to: &h.to,
            label: &h.label,
            originator: Some(&h.originator),
            consents,
        },
        now,
    );
    match (&d.receiver_label, d.allowed()) {
        (Some(l), true) => Arrival::Accept {
            receiver_label: l.clone(),
            decision: d,
        },
        _ => Arrival::Refuse {
            reasons: d.reasons.iter().map(ToString::to_string).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_grows_is_capped_and_jittered(attempts in 0u32..100, jitter in any::<u64>(), now in 0i64..1_000_000_000_000) {
            let p = RetryPolicy::default();
            let next = p.next_attempt_ms(now, attempts, jitter);
            prop_assert!(next > now);
            prop_assert!(next - now <= p.retry_delay_ms_max);
            prop_assert!(next - now >= p.retry_delay_ms_min / 2);
        }
    }

    #[test]
    fn backoff_doubles_until_the_cap() {
        let p = RetryPolicy::default();
        let d = |a| p.next_attempt_ms(0, a, 0);
        assert_eq!(d(1), 50);
        assert_eq!(d(2), 100);
        assert_eq!(d(3), 200);
        assert_eq!(d(40), 15_000);
    }
}
