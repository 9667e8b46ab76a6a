//! An agreement's state at an instant, per party, computed from its term and its
//! signed events: signature, notice of withdrawal, (conditional) withdrawal of a notice,
//! recorded conditions, suspension, termination, and the calendar.
//!
//! [`participation_at`] is the definition: simple, direct, a pure function of
//! (agreement, party, instant). [`Timeline`] precomputes the same answers at every
//! instant where they can change, so the release decision looks them up in O(log n).

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use serde::Serialize;

use crate::agreement::{Agreement, EventKind, Term};
use crate::ids::PartyId;

/// Most term periods walked when looking for a lapse; beyond this a term is absurd.
pub const TERM_PERIODS_MAX: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Participation {
    /// The document is a draft: never in force.
    Draft,
    /// The party has not signed.
    AwaitingSignatures,
    /// Signed, but the term has not begun.
    Signed {
        effective: Timestamp,
    },
    /// In force; `term_ends` is the end of the current term, if the term is finite.
    InForce {
        term_ends: Option<Timestamp>,
    },
    /// In force until `lapses`, because of a notice given at `given`; if `condition` is
    /// set, the party has offered to withdraw the notice once it is recorded.
    NoticeGiven {
        given: Timestamp,
        lapses: Timestamp,
        condition: Option<String>,
    },
    /// The party's participation ended at `at`; `notice` is when notice was given, or
    /// none if the term simply ended without renewal.
    Lapsed {
        at: Timestamp,
        notice: Option<Timestamp>,
    },
    Suspended {
        since: Timestamp,
        until: Option<Timestamp>,
    },
    Terminated {
        at: Timestamp,
        by: PartyId,
    },
}

impl Participation {
    /// Whether traffic may flow: in force, including while a notice runs.
    pub fn participates(&self) -> bool {
        matches!(self, Self::InForce { .. } | Self::NoticeGiven { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::AwaitingSignatures => "awaiting signatures",
            Self::Signed { .. } => "signed, not yet in force",
            Self::InForce { .. } => "in force",
            Self::NoticeGiven { .. } => "notice given",
            Self::Lapsed { .. } => "lapsed",
            Self::Suspended { .. } => "suspended",
            Self::Terminated { .. } => "terminated",
        }
    }

    /// A sentence for people: what the state is and since or until when, with instants
    /// shown in `zone` (the agreement's own).
    pub fn explain(&self, party: &PartyId, zone: &TimeZone) -> String {
        let show = |t: &Timestamp| show_instant(*t, zone);
        match self {
            Self::Draft => "the agreement is a draft and has never been in force".to_owned(),
            Self::AwaitingSignatures => format!("`{party}` has not signed the agreement"),
            Self::Signed { effective } => format!(
                "`{party}` signed, but the agreement takes effect only at {}",
                show(effective)
            ),
            Self::InForce { term_ends: Some(e) } => {
                format!("`{party}` takes part; the current term ends at {}", show(e))
            }
            Self::InForce { term_ends: None } => format!("`{party}` takes part"),
            Self::NoticeGiven {
                given,
                lapses,
                condition,
            } => {
                let mut s = format!(
                    "`{party}` gave notice of withdrawal at {}; its participation lapses at {}",
                    show(given),
                    show(lapses)
                );
                if let Some(c) = condition {
                    s.push_str(&format!(" unless condition `{c}` is recorded first"));
                }
                s
            }
            Self::Lapsed {
                at,
                notice: Some(n),
            } => format!(
                "`{party}`'s participation lapsed at {} after its notice of withdrawal given at {}",
                show(at),
                show(n)
            ),
            Self::Lapsed { at, notice: None } => format!(
                "`{party}`'s participation lapsed at {} when the term ended without renewal",
                show(at)
            ),
            Self::Suspended {
                since,
                until: Some(u),
            } => format!(
                "`{party}`'s participation is suspended from {} until {}",
                show(since),
                show(u)
            ),
            Self::Suspended { since, until: None } => format!(
                "`{party}`'s participation is suspended since {}",
                show(since)
            ),
            Self::Terminated { at, by } => {
                format!("the agreement was terminated by `{by}` at {}", show(at))
            }
        }
    }
}

/// An instant as people read it: RFC 3339 in the given zone, e.g. `2019-11-23T00:00:00+09:00`.
pub fn show_instant(t: Timestamp, zone: &TimeZone) -> String {
    // Seconds precision with the numeric offset: what people write in agreements.
    let z = t.to_zoned(zone.clone());
    let dt = z.datetime();
    let off = z.offset().seconds();
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        off / 3600,
        (off % 3600) / 60
    )
}

/// The agreement's own time zone (its term's), UTC for drafts without a term.
pub fn zone_of(a: &Agreement) -> TimeZone {
    a.term
        .as_ref()
        .map(|t| t.effective.time_zone().clone())
        .unwrap_or(TimeZone::UTC)
}

fn add(z: &Zoned, span: Span, times: i64) -> Option<Zoned> {
    let s = span.checked_mul(times).ok()?;
    z.checked_add(s).ok()
}

/// The end of the term period in which `t` falls (the first boundary after `t`).
pub fn term_end_after(term: &Term, t: Timestamp) -> Option<Timestamp> {
    let length = term.length?;
    let first = add(&term.effective, length, 1)?.timestamp();
    if !term.auto_renew {
        return Some(first);
    }
    // Jump close by estimate, then step; calendar arithmetic from `effective` each time
    // so month ends do not drift.
    let secs = (first.as_second() - term.effective.timestamp().as_second()).max(1);
    let guess = ((t.as_second() - term.effective.timestamp().as_second()) / secs)
        .clamp(1, TERM_PERIODS_MAX);
    let mut k = (guess - 1).max(1);
    while k <= TERM_PERIODS_MAX {
        let end = add(&term.effective, length, k)?.timestamp();
        if end > t {
            if k > 1 {
                let prev = add(&term.effective, length, k - 1)?.timestamp();
                if prev > t {
                    k -= 1;
                    continue;
                }
            }
            return Some(end);
        }
        k += 1;
    }
    None
}

/// When a notice given at `given` makes the party's participation lapse: the end of the
/// first term period that still leaves the full notice period before it.
pub fn lapse_for_notice(term: &Term, given: Timestamp) -> Timestamp {
    if term.length.is_none() {
        let notice_end = term
            .notice
            .and_then(|n| {
                given
                    .to_zoned(term.effective.time_zone().clone())
                    .checked_add(n)
                    .ok()
            })
            .map(|z| z.timestamp());
        return notice_end.unwrap_or(given);
    }
    let mut end = term_end_after(term, given).unwrap_or(Timestamp::MAX);
    let mut k = 0;
    while k < TERM_PERIODS_MAX {
        let deadline = match term.notice {
            Some(n) => end
                .to_zoned(term.effective.time_zone().clone())
                .checked_sub(n)
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MIN),
            None => end,
        };
        if given <= deadline || !term.auto_renew {
            return end;
        }
        // Notice came too late for this term: it takes effect at the end of the next.
        end = term_end_after(term, end).unwrap_or(Timestamp::MAX);
        k += 1;
    }
    end
}

/// The definition of a party's participation at instant `t`.
pub fn participation_at(a: &Agreement, party: &PartyId, t: Timestamp) -> Participation {
    let Some(term) = a.term.as_ref().filter(|_| !a.draft) else {
        return Participation::Draft;
    };
    if let Some(e) = a
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Terminated) && e.at <= t)
    {
        return Participation::Terminated {
            at: e.at,
            by: e.party.clone(),
        };
    }
    let Some(signed) = a
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Signed) && &e.party == party)
    else {
        return Participation::AwaitingSignatures;
    };
    if signed.at > t {
        return Participation::AwaitingSignatures;
    }
    let effective = term.effective.timestamp();
    if t < effective {
        return Participation::Signed { effective };
    }
    if !term.auto_renew
        && let Some(end) = term_end_after(term, effective)
        && t >= end
    {
        return Participation::Lapsed {
            at: end,
            notice: None,
        };
    }

    // Replay the party's notices in time order up to t.
    struct Notice {
        given: Timestamp,
        lapses: Timestamp,
        condition: Option<String>,
    }
    let mut notice: Option<Notice> = None;
    let mut suspended: Option<(Timestamp, Option<Timestamp>)> = None;
    for e in a.events.iter().filter(|e| e.at <= t) {
        if let Some(n) = &notice
            && e.at >= n.lapses
        {
            break;
        }
        let own = &e.party == party;
        match &e.kind {
            EventKind::NoticeOfWithdrawal if own && notice.is_none() => {
                notice = Some(Notice {
                    given: e.at,
                    lapses: lapse_for_notice(term, e.at),
                    condition: None,
                });
            }
            EventKind::NoticeWithdrawn { condition: None } if own => notice = None,
            EventKind::NoticeWithdrawn { condition: Some(c) } if own => {
                let already = a.events.iter().any(|r| {
                    r.at <= e.at && matches!(&r.kind, EventKind::ConditionRecorded { condition } if condition == c)
                });
                if already {
                    notice = None;
                } else if let Some(n) = &mut notice {
                    n.condition = Some(c.clone());
                }
            }
            EventKind::ConditionRecorded { condition }
                if notice.as_ref().and_then(|n| n.condition.as_ref()) == Some(condition) =>
            {
                notice = None;
            }
            EventKind::Suspended { until } if own => suspended = Some((e.at, *until)),
            EventKind::Resumed if own => suspended = None,
            _ => {}
        }
    }
    if let Some(n) = notice {
        if t >= n.lapses {
            return Participation::Lapsed {
                at: n.lapses,
                notice: Some(n.given),
            };
        }
        if let Some(s) = suspension_in_effect(suspended, t) {
            return s;
        }
        return Participation::NoticeGiven {
            given: n.given,
            lapses: n.lapses,
            condition: n.condition,
        };
    }
    if let Some(s) = suspension_in_effect(suspended, t) {
        return s;
    }
    Participation::InForce {
        term_ends: term_end_after(term, t),
    }
}

fn suspension_in_effect(
    s: Option<(Timestamp, Option<Timestamp>)>,
    t: Timestamp,
) -> Option<Participation> {
    match s {
        Some((since, until)) if until.is_none_or(|u| t < u) => {
            Some(Participation::Suspended { since, until })
        }
        _ => None,
    }
}

/// A party's participation precomputed over all time.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// INVARIANT: sorted by instant, first entry at `Timestamp::MIN`; each state holds
    /// from its instant until the next entry's.
    segments: Vec<(Timestamp, Participation)>,
}

impl Timeline {
    pub fn build(a: &Agreement, party: &PartyId) -> Self {
        let Some(term) = a.term.as_ref().filter(|_| !a.draft) else {
            return Self {
                segments: vec![(Timestamp::MIN, Participation::Draft)],
            };
        };
        // Every instant at which the answer can change.
        let mut points = vec![Timestamp::MIN, term.effective.timestamp()];
        for e in &a.events {
            points.push(e.at);
            match &e.kind {
                EventKind::NoticeOfWithdrawal => points.push(lapse_for_notice(term, e.at)),
                EventKind::Suspended { until: Some(u) } => points.push(*u),
                _ => {}
            }
        }
        if !term.auto_renew
            && let Some(end) = term_end_after(term, term.effective.timestamp())
        {
            points.push(end);
        }
        points.sort();
        points.dedup();
        let mut segments: Vec<(Timestamp, Participation)> = Vec::with_capacity(points.len());
        for p in points {
            let state = participation_at(a, party, p);
            // States that differ only in the current term's end are one segment; the
            // term end is recomputed on lookup.
            let state = match state {
                Participation::InForce { .. } => Participation::InForce { term_ends: None },
                other => other,
            };
            if segments.last().is_none_or(|(_, last)| *last != state) {
                segments.push((p, state));
            }
        }
        Self { segments }
    }

    /// The state at `t`, without the current term's end (cheap: a binary search).
    pub fn state(&self, t: Timestamp) -> &Participation {
        let i = self.segments.partition_point(|(start, _)| *start <= t);
        match self.segments.get(i.saturating_sub(1)) {
            Some((_, s)) => s,
            None => &Participation::AwaitingSignatures,
        }
    }

    /// The full state at `t`, equal to [`participation_at`].
    pub fn at(&self, term: Option<&Term>, t: Timestamp) -> Participation {
        match self.state(t) {
            Participation::InForce { .. } => Participation::InForce {
                term_ends: term.and_then(|term| term_end_after(term, t)),
            },
            s => s.clone(),
        }
    }

    /// Instants at which this party's state changes, after the first.
    pub fn changes(&self) -> impl Iterator<Item = (Timestamp, &Participation)> {
        self.segments.iter().skip(1).map(|(t, s)| (*t, s))
    }
}
