//! The release decision: may this envelope cross from one desk to another at this
//! instant, under which agreement and channel, in which of the receiver's markings,
//! and why. One pure function of (agreements, request, instant); the sender runs it at
//! acceptance and the receiver runs it again with its own copy.

use std::collections::HashMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::agreement::{Agreement, ThirdPartyRule};
use crate::canonical::{Digest32, agreement_digest};
use crate::ids::{DeskId, PartyId};
use crate::label::{Label, Scheme};
use crate::lifecycle::{Participation, Timeline};

/// An agreement prepared for fast decisions.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub agreement: Agreement,
    pub digest: Digest32,
    /// The agreement's own time zone, for showing instants in its reasons.
    pub zone: jiff::tz::TimeZone,
    /// Each party's listed public keys, parsed once.
    keys: Vec<(PartyId, crate::signing::PublicKey)>,
    timelines: Vec<(PartyId, Timeline)>,
}

impl Compiled {
    pub fn new(agreement: Agreement) -> Self {
        let timelines = agreement
            .parties
            .iter()
            .map(|p| (p.id.clone(), Timeline::build(&agreement, &p.id)))
            .collect();
        let keys = agreement
            .parties
            .iter()
            .flat_map(|p| {
                p.keys
                    .iter()
                    .filter_map(|k| crate::signing::PublicKey::parse(k).ok())
                    .map(|k| (p.id.clone(), k))
            })
            .collect();
        Self {
            digest: agreement_digest(&agreement),
            zone: crate::lifecycle::zone_of(&agreement),
            agreement,
            timelines,
            keys,
        }
    }

    pub fn timeline(&self, party: &str) -> Option<&Timeline> {
        self.timelines
            .iter()
            .find(|(p, _)| p.as_str() == party)
            .map(|(_, t)| t)
    }

    /// A party's participation at `t`; a party not in the agreement does not take part.
    pub fn participation(&self, party: &PartyId, t: Timestamp) -> Participation {
        match self.timeline(party.as_str()) {
            Some(tl) => tl.at(self.agreement.term.as_ref(), t),
            None => Participation::AwaitingSignatures,
        }
    }

    fn participates(&self, party: &str, t: Timestamp) -> bool {
        self.timeline(party)
            .is_some_and(|tl| tl.state(t).participates())
    }
}

/// The agreements a node holds, indexed by the desk pairs their channels join.
#[derive(Debug, Clone, Default)]
pub struct AgreementSet {
    agreements: Vec<Compiled>,
    /// from desk → to desk → (agreement index, channel index), in agreement order.
    /// Nested so a lookup borrows the request's strings instead of allocating a key.
    routes: HashMap<String, HashMap<String, Vec<(usize, usize)>>>,
}

impl AgreementSet {
    pub fn new(agreements: impl IntoIterator<Item = Agreement>) -> Self {
        let mut set = Self::default();
        for a in agreements {
            set.insert(a);
        }
        set
    }

    /// Adds an agreement; a newer version of the same id replaces the older.
    pub fn insert(&mut self, a: Agreement) {
        if let Some(pos) = self.agreements.iter().position(|c| c.agreement.id == a.id) {
            if self
                .agreements
                .get(pos)
                .is_some_and(|c| c.agreement.version > a.version)
            {
                return;
            }
            self.agreements.remove(pos);
        }
        self.agreements.push(Compiled::new(a));
        self.agreements
            .sort_by(|x, y| x.agreement.id.cmp(&y.agreement.id));
        self.reindex();
    }

    fn reindex(&mut self) {
        self.routes.clear();
        for (ai, c) in self.agreements.iter().enumerate() {
            for (ci, ch) in c.agreement.channels.iter().enumerate() {
                for from in &ch.desks {
                    for to in &ch.desks {
                        if from.party_str() != to.party_str() {
                            self.routes
                                .entry(from.as_str().to_owned())
                                .or_default()
                                .entry(to.as_str().to_owned())
                                .or_default()
                                .push((ai, ci));
                        }
                    }
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Compiled> {
        self.agreements.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Compiled> {
        self.agreements.iter().find(|c| c.agreement.id == id)
    }

    pub fn len(&self) -> usize {
        self.agreements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agreements.is_empty()
    }

    /// Whether any desk of `desk` is declared by some agreement.
    pub fn knows_desk(&self, desk: &str) -> bool {
        self.agreements.iter().any(|c| {
            c.agreement
                .parties
                .iter()
                .any(|p| p.desks.iter().any(|d| d.id.as_str() == desk))
        })
    }

    /// Every desk the agreements declare for `party`, sorted, once each.
    pub fn party_desks(&self, party: &str) -> Vec<String> {
        let mut desks: Vec<String> = self
            .agreements
            .iter()
            .flat_map(|c| c.agreement.parties.iter())
            .filter(|p| p.id.as_str() == party)
            .flat_map(|p| p.desks.iter().map(|d| d.id.as_str().to_owned()))
            .collect();
        desks.sort();
        desks.dedup();
        desks
    }

    /// The lowest and highest place on the common scale that the agreements give
    /// `level` of `scheme` (a party's own level, or a common one). Agreements normally
    /// agree; where they do not, clearance checks use the conservative end of the range.
    pub fn level_ranks(&self, label: &crate::label::Label) -> Option<(usize, usize)> {
        let mut range: Option<(usize, usize)> = None;
        for c in &self.agreements {
            if let Some(r) = label.to_common(&c.agreement) {
                range = Some(range.map_or((r, r), |(lo, hi)| (lo.min(r), hi.max(r))));
            }
        }
        range
    }

    /// `party`'s own levels, lowest first, each with the lowest common place any
    /// agreement gives it.
    pub fn party_levels(&self, party: &str) -> Vec<(String, usize)> {
        let mut levels: Vec<(String, usize)> = Vec::new();
        for c in &self.agreements {
            for l in c
                .agreement
                .scale(party)
                .map(|s| s.levels.as_slice())
                .unwrap_or(&[])
            {
                match levels.iter_mut().find(|(n, _)| *n == l.name) {
                    Some((_, r)) => *r = (*r).min(l.common),
                    None => levels.push((l.name.clone(), l.common)),
                }
            }
        }
        levels.sort_by_key(|(_, r)| *r);
        levels
    }

    /// Every public key any agreement lists for `party`, once each.
    pub fn party_keys(&self, party: &str) -> Vec<crate::signing::PublicKey> {
        let mut out: Vec<crate::signing::PublicKey> = Vec::new();
        for (_, k) in self
            .agreements
            .iter()
            .flat_map(|c| c.keys.iter())
            .filter(|(p, _)| p.as_str() == party)
        {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
    }

    /// Whether any agreement names `party`.
    pub fn knows_party(&self, party: &str) -> bool {
        self.agreements
            .iter()
            .any(|c| c.agreement.party(party).is_some())
    }

    /// Whether `a` and `b` share an agreement in force at `t` (the link may be open).
    pub fn parties_linked(&self, a: &str, b: &str, t: Timestamp) -> bool {
        self.agreements
            .iter()
            .any(|c| c.participates(a, t) && c.participates(b, t))
    }
}

/// An originator's recorded permission to pass its information from one party to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Consent {
    pub originator: PartyId,
    pub from: PartyId,
    pub to: PartyId,
    pub granted_at: Timestamp,
    pub expires: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct ReleaseRequest<'a> {
    pub from: &'a DeskId,
    pub to: &'a DeskId,
    pub label: &'a Label,
    /// The party whose information this is; the sender's own party if none.
    pub originator: Option<&'a PartyId>,
    pub consents: &'a [Consent],
}

/// One clause that decided, with a reason people can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The agreement, or none when no agreement applies.
    pub agreement: Option<String>,
    /// Which clause: `channels.navy-hotline`, `classification.levels.ROK`, `term`,
    /// `events`, `release`.
    pub clause: String,
    pub text: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.agreement {
            Some(a) => write!(f, "agreement `{a}`, {}: {}", self.clause, self.text),
            None => write!(f, "{}: {}", self.clause, self.text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub decision: Outcome,
    /// The agreement and channel that carry the envelope, when allowed.
    pub agreement: Option<String>,
    pub agreement_version: Option<u32>,
    pub channel: Option<String>,
    /// The label in the receiver's own scale, when allowed.
    pub receiver_label: Option<Label>,
    /// The level on the agreement's common scale, when allowed.
    pub common_level: Option<String>,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.decision == Outcome::Allow
    }

    fn deny(reasons: Vec<Reason>) -> Self {
        Self {
            decision: Outcome::Deny,
            agreement: None,
            agreement_version: None,
            channel: None,
            receiver_label: None,
            common_level: None,
            reasons,
        }
    }
}

fn reason(agreement: Option<&str>, clause: impl Into<String>, text: impl Into<String>) -> Reason {
    Reason {
        agreement: agreement.map(str::to_owned),
        clause: clause.into(),
        text: text.into(),
    }
}

/// Decides one release. Pure: the same inputs always give the same decision.
pub fn decide(set: &AgreementSet, req: &ReleaseRequest<'_>, at: Timestamp) -> Decision {
    let from_party = req.from.party();
    let to_party = req.to.party();
    if from_party == to_party {
        return Decision::deny(vec![reason(
            None,
            "desks",
            format!(
                "`{}` and `{}` are both desks of `{from_party}`; Liaison carries traffic between parties",
                req.from, req.to
            ),
        )]);
    }
    let originator = req.originator.unwrap_or(&from_party);
    let third_party = *originator != from_party;
    if *originator == to_party {
        // Returning information to its originator is never a third-party release.
    }

    let Some(routes) = set
        .routes
        .get(req.from.as_str())
        .and_then(|m| m.get(req.to.as_str()))
    else {
        let mut reasons = vec![reason(
            None,
            "channels",
            format!(
                "no agreement opens a channel between `{}` and `{}`",
                req.from, req.to
            ),
        )];
        if third_party
            && *originator != to_party
            && !has_consent(req.consents, originator, &from_party, &to_party, at)
        {
            reasons.push(reason(
                None,
                "release",
                format!("the information originates with `{originator}`, which has not consented to its release by `{from_party}` to `{to_party}`"),
            ));
        }
        return Decision::deny(reasons);
    };

    let mut denials = Vec::new();
    'candidates: for &(ai, ci) in routes {
        let Some(compiled) = set.agreements.get(ai) else {
            continue;
        };
        let a = &compiled.agreement;
        let Some(channel) = a.channels.get(ci) else {
            continue;
        };
        let aid = Some(a.id.as_str());
        let zone = &compiled.zone;
        // Formatting an instant in the agreement's zone is the costliest part of a
        // reason: only do it where a reason shows it.
        let shown = || crate::lifecycle::show_instant(at, zone);
        let chan_clause = || format!("channels.{}", channel.id);

        for party in [&from_party, &to_party] {
            if !compiled.participates(party.as_str(), at) {
                let state = compiled.participation(party, at);
                let clause = match state {
                    Participation::Lapsed { notice: None, .. } | Participation::Signed { .. } => {
                        "term"
                    }
                    Participation::Draft => "draft",
                    _ => "events",
                };
                denials.push(reason(
                    aid,
                    clause,
                    format!(
                        "not in force between `{from_party}` and `{to_party}` at {}: {}",
                        shown(),
                        state.explain(party, zone)
                    ),
                ));
                continue 'candidates;
            }
        }

        let label_clause = || match &req.label.scheme {
            Scheme::Common => "classification.common".to_owned(),
            Scheme::Party(p) => format!("classification.levels.{p}"),
        };
        let Some(level) = req.label.to_common(a) else {
            denials.push(reason(aid, label_clause(), format!("label `{}` is not mapped by this agreement; unmapped levels are refused, never guessed", req.label)));
            continue;
        };
        if level > channel.ceiling {
            denials.push(reason(
                aid,
                chan_clause(),
                format!(
                    "label `{}` is `{}` on the common scale, above the channel's ceiling `{}`",
                    req.label,
                    a.common_name(level),
                    a.common_name(channel.ceiling)
                ),
            ));
            continue;
        }
        let Some(receiver_level) = a
            .scale(to_party.as_str())
            .and_then(|s| s.from_common(level))
        else {
            denials.push(reason(aid, format!("classification.levels.{to_party}"), format!(
                "`{to_party}` has no level for `{}`; unmapped levels are refused, never guessed",
                a.common_name(level)
            )));
            continue;
        };

        let mut reasons = vec![
            reason(
                aid,
                chan_clause(),
                format!(
                    "{} channel `{}` joins `{}` and `{}`, ceiling `{}`",
                    channel.kind.as_str(),
                    channel.id,
                    req.from,
                    req.to,
                    a.common_name(channel.ceiling)
                ),
            ),
            reason(
                aid,
                "term",
                format!(
                    "in force for `{from_party}` and `{to_party}` at {}",
                    shown()
                ),
            ),
            reason(
                aid,
                label_clause(),
                format!(
                    "`{}` is `{}` on the common scale, which `{to_party}` marks `{receiver_level}`",
                    req.label,
                    a.common_name(level)
                ),
            ),
        ];

        if third_party && *originator != to_party {
            match release_permission(set, req, originator, &from_party, &to_party, at) {
                Ok(r) => reasons.push(r),
                Err(r) => {
                    denials.push(r);
                    continue;
                }
            }
        }

        return Decision {
            decision: crate::release::Outcome::Allow,
            agreement: Some(a.id.clone()),
            agreement_version: Some(a.version),
            channel: Some(channel.id.clone()),
            receiver_label: Some(Label::party(&to_party, receiver_level)),
            common_level: Some(a.common_name(level).to_owned()),
            reasons,
        };
    }
    Decision::deny(denials)
}

fn has_consent(
    consents: &[Consent],
    originator: &PartyId,
    from: &PartyId,
    to: &PartyId,
    at: Timestamp,
) -> bool {
    consents.iter().any(|c| {
        &c.originator == originator
            && &c.from == from
            && &c.to == to
            && c.granted_at <= at
            && c.expires.is_none_or(|e| at < e)
    })
}

/// Rule 4: passing an originator's information to a third party needs its recorded
/// consent or a clause that grants it; the duty outlives the agreement it came under.
fn release_permission(
    set: &AgreementSet,
    req: &ReleaseRequest<'_>,
    originator: &PartyId,
    from: &PartyId,
    to: &PartyId,
    at: Timestamp,
) -> Result<Reason, Reason> {
    // Any agreement binding originator and sender with a forbidding rule forbids.
    for c in set.iter() {
        let a = &c.agreement;
        if a.party(originator.as_str()).is_some()
            && a.party(from.as_str()).is_some()
            && a.release.third_party == ThirdPartyRule::Forbidden
        {
            return Err(reason(
                Some(&a.id),
                "release.third_party",
                format!(
                    "information of `{originator}` may not be passed on to third parties at all"
                ),
            ));
        }
    }
    for c in set.iter() {
        let a = &c.agreement;
        if !c.participates(originator.as_str(), at) {
            continue;
        }
        if let Some(g) = a.release.grants.iter().find(|g| {
            &g.originator == originator
                && &g.from == from
                && g.to.contains(to)
                // The grant's ceiling is on its own agreement's scale, which may differ
                // from the carrying agreement's: measure the label on that scale, and
                // a label that agreement does not map is not covered (never guessed).
                && req.label.to_common(a).is_some_and(|l| l <= g.ceiling)
        }) {
            return Ok(reason(
                Some(&a.id),
                format!("release.grants.{}", g.id),
                format!(
                    "`{originator}` grants in advance that `{from}` may pass its information up to `{}` to `{to}`",
                    a.common_name(g.ceiling)
                ),
            ));
        }
    }
    if has_consent(req.consents, originator, from, to, at) {
        return Ok(reason(
            None,
            "consent",
            format!("`{originator}` has consented to `{from}` passing its information to `{to}`"),
        ));
    }
    Err(reason(
        None,
        "release",
        format!(
            "the information originates with `{originator}`, which has not consented to its release by `{from}` to `{to}`"
        ),
    ))
}
