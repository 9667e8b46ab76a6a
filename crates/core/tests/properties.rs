//! Property tests: the canonical form ignores layout and changes with meaning; the
//! precomputed lifecycle timeline agrees with the definition at every instant.

// Integration tests: a panic is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jiff::{Timestamp, ToSpan};
use liaison_core::agreement::{Event, EventKind};
use liaison_core::canonical::agreement_digest;
use liaison_core::ids::PartyId;
use liaison_core::lifecycle::{Participation, Timeline, participation_at};
use liaison_core::parse::parse_agreement;
use proptest::prelude::*;

const GOOD: &str = include_str!("../../../examples/scenario/rok-usa-jpn-information-sharing.toml");

/// Re-lays the document out: comments dropped or added, blank lines, spacing around
/// `=`, and the order of whole `[[parties]]`/`[[channels]]` blocks.
fn reformat(text: &str, seed: u64) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with('[') && !cur.is_empty() {
            blocks.push(std::mem::take(&mut cur));
        }
        let line = if line.trim_start().starts_with('#') {
            if seed.is_multiple_of(2) {
                String::new()
            } else {
                format!("{line} (annotated)")
            }
        } else if seed.is_multiple_of(3) {
            line.replacen(" = ", "   =  ", 1)
        } else {
            line.to_owned()
        };
        cur.push_str(&line);
        cur.push('\n');
        if seed.is_multiple_of(5) {
            cur.push('\n');
        }
    }
    blocks.push(cur);
    // Swap the two [[channels]] blocks and rotate the [[parties]] blocks.
    let idx = |blocks: &[String], prefix: &str| {
        blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.starts_with(prefix))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let chans = idx(&blocks, "[[channels]]");
    if seed % 7 < 4 && chans.len() == 2 {
        blocks.swap(chans[0], chans[1]);
    }
    let parties = idx(&blocks, "[[parties]]");
    for _ in 0..(seed % 3) {
        let first = blocks[parties[0]].clone();
        for w in 0..parties.len() - 1 {
            blocks[parties[w]] = blocks[parties[w + 1]].clone();
        }
        blocks[*parties.last().unwrap()] = first;
    }
    blocks.concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reformatting_never_changes_the_digest(seed in any::<u64>()) {
        let a = parse_agreement("a", GOOD).unwrap();
        let text = reformat(GOOD, seed);
        let b = parse_agreement("b", &text).unwrap();
        prop_assert_eq!(agreement_digest(&a), agreement_digest(&b));
    }

    #[test]
    fn any_change_of_meaning_changes_the_digest(which in 0usize..9) {
        let a = parse_agreement("a", GOOD).unwrap();
        let changed = match which {
            0 => GOOD.replace("version = 1", "version = 2"),
            1 => GOOD.replace("ceiling = \"SECRET\"\n\n[[channels]]", "ceiling = \"CONFIDENTIAL\"\n\n[[channels]]"),
            2 => GOOD.replace("notice = \"90 days\"", "notice = \"91 days\""),
            3 => GOOD.replace("length = \"1 year\"", "length = \"2 years\""),
            4 => GOOD.replace("\"極秘\" = \"SECRET\"", "\"極祕\" = \"SECRET\""),
            5 => GOOD.replace("auto_renew = true", "auto_renew = false"),
            6 => GOOD.replace("effective = 2016-11-23T00:00:00+09:00", "effective = 2016-11-23T00:00:01+09:00"),
            7 => GOOD.replace("may_record = [\"JPN\", \"ROK\"]", "may_record = [\"JPN\"]"),
            _ => GOOD.replace("desks = [\"JPN.minister\", \"JPN.intel\"]", "desks = [\"JPN.minister\", \"JPN.intel\", \"JPN.navy\"]"),
        };
        prop_assert_ne!(&changed, GOOD);
        let b = parse_agreement("b", &changed).unwrap();
        prop_assert_ne!(agreement_digest(&a), agreement_digest(&b));
    }
}

fn arb_events() -> impl Strategy<Value = Vec<(u8, u8, i64)>> {
    // (kind, party, seconds after 2016-01-01)
    prop::collection::vec((0u8..7, 0u8..3, 0i64..(6 * 366 * 86_400)), 0..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn timeline_agrees_with_definition(events in arb_events(), probes in prop::collection::vec(0i64..(7 * 366 * 86_400), 1..40)) {
        let mut a = parse_agreement("a", GOOD).unwrap();
        let parties = ["ROK", "USA", "JPN"].map(|p| PartyId::new(p).unwrap());
        let base: Timestamp = "2016-01-01T00:00:00Z".parse().unwrap();
        a.events = events.iter().map(|(k, p, s)| {
            let kind = match k {
                0 => EventKind::Signed,
                1 => EventKind::NoticeOfWithdrawal,
                2 => EventKind::NoticeWithdrawn { condition: None },
                3 => EventKind::NoticeWithdrawn { condition: Some("jpn-export-restrictions-lifted".into()) },
                4 => EventKind::ConditionRecorded { condition: "jpn-export-restrictions-lifted".into() },
                5 => EventKind::Suspended { until: Some(base + (s + 86_400 * 30).seconds()) },
                _ => EventKind::Resumed,
            };
            Event { kind, party: parties[*p as usize].clone(), at: base + s.seconds(), signature: None }
        }).collect();
        a.events.sort_by_key(|e| e.at);
        for party in &parties {
            let tl = Timeline::build(&a, party);
            for probe in &probes {
                let at = base + probe.seconds();
                prop_assert_eq!(tl.at(a.term.as_ref(), at), participation_at(&a, party, at));
            }
            // Once lapsed, never back in force: a lapse is final.
            let mut lapsed = false;
            for (_, s) in tl.changes() {
                if lapsed {
                    prop_assert!(!s.participates(), "back in force after a lapse: {:?}", s);
                }
                if matches!(s, Participation::Lapsed { .. }) { lapsed = true; }
            }
        }
    }

    #[test]
    fn term_boundaries_are_calendar_correct(years in 0i64..40) {
        // A one-year term from 23 November 00:00 KST always ends on 23 November 00:00 KST.
        let a = parse_agreement("a", GOOD).unwrap();
        let term = a.term.as_ref().unwrap();
        let at = term.effective.checked_add((years * 12).months()).unwrap().checked_add(1.day()).unwrap().timestamp();
        let end = liaison_core::lifecycle::term_end_after(term, at).unwrap();
        let shown = liaison_core::lifecycle::show_instant(end, term.effective.time_zone());
        prop_assert_eq!(shown, format!("{}-11-23T00:00:00+09:00", 2017 + years));
    }
}

#[test]
fn late_notice_takes_effect_a_term_later() {
    // Notice given with less than 90 days left runs to the end of the following term.
    let a = parse_agreement("a", GOOD).unwrap();
    let term = a.term.as_ref().unwrap();
    let late: Timestamp = "2019-10-01T00:00:00+09:00".parse().unwrap();
    let lapse = liaison_core::lifecycle::lapse_for_notice(term, late);
    assert_eq!(
        liaison_core::lifecycle::show_instant(lapse, term.effective.time_zone()),
        "2020-11-23T00:00:00+09:00"
    );
    let on_time: Timestamp = "2019-08-25T00:00:00+09:00".parse().unwrap();
    let lapse = liaison_core::lifecycle::lapse_for_notice(term, on_time);
    assert_eq!(
        liaison_core::lifecycle::show_instant(lapse, term.effective.time_zone()),
        "2019-11-23T00:00:00+09:00"
    );
}

#[test]
fn dst_zone_terms_keep_local_midnight() {
    // A monthly term in New York stays at local midnight across the DST change.
    let text = GOOD
        .replace(
            "effective = 2016-11-23T00:00:00+09:00",
            "effective = 2019-10-01T00:00:00-04:00",
        )
        .replace(
            "time_zone = \"Asia/Seoul\"",
            "time_zone = \"America/New_York\"",
        )
        .replace("length = \"1 year\"", "length = \"1 month\"")
        .replace("notice = \"90 days\"", "notice = \"7 days\"");
    let a = parse_agreement("a", &text).unwrap();
    let term = a.term.as_ref().unwrap();
    let at: Timestamp = "2019-11-15T00:00:00Z".parse().unwrap();
    let end = liaison_core::lifecycle::term_end_after(term, at).unwrap();
    assert_eq!(
        liaison_core::lifecycle::show_instant(end, term.effective.time_zone()),
        "2019-12-01T00:00:00-05:00"
    );
}
