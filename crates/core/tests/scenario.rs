//! The seed scenario's decisions, as the foundation issue's acceptance lists them,
//! plus every rule of the release decision.

// Integration tests: a panic is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jiff::Timestamp;
use liaison_core::agreement::Agreement;
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::label::Label;
use liaison_core::lifecycle::{Participation, participation_at};
use liaison_core::parse::parse_agreement;
use liaison_core::release::{AgreementSet, Consent, Decision, ReleaseRequest, decide};

fn scenario() -> Vec<Agreement> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/scenario");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            parse_agreement(
                &p.display().to_string(),
                &std::fs::read_to_string(p).unwrap(),
            )
            .unwrap()
        })
        .collect()
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn ask(
    set: &AgreementSet,
    from: &str,
    to: &str,
    label: &str,
    originator: Option<&str>,
    consents: &[Consent],
    at: &str,
) -> Decision {
    let from = DeskId::new(from).unwrap();
    let to = DeskId::new(to).unwrap();
    let label: Label = label.parse().unwrap();
    let originator = originator.map(|o| PartyId::new(o).unwrap());
    decide(
        set,
        &ReleaseRequest {
            from: &from,
            to: &to,
            label: &label,
            originator: originator.as_ref(),
            consents,
        },
        t(at),
    )
}

const BEFORE: &str = "2019-11-22T23:59:59+09:00";
const AFTER: &str = "2019-11-23T00:00:01+09:00";

#[test]
fn secret_report_reaches_rok_in_its_own_marking() {
    let set = AgreementSet::new(scenario());
    let d = ask(
        &set,
        "USA.intel",
        "ROK.intel",
        "USA:SECRET",
        None,
        &[],
        BEFORE,
    );
    assert!(d.allowed(), "{:?}", d.reasons);
    assert_eq!(d.receiver_label.unwrap().to_string(), "ROK:II급 비밀");
    assert_eq!(d.common_level.as_deref(), Some("SECRET"));
    let d = ask(
        &set,
        "USA.intel",
        "JPN.intel",
        "USA:SECRET",
        None,
        &[],
        BEFORE,
    );
    assert_eq!(d.receiver_label.unwrap().to_string(), "JPN:極秘");
}

#[test]
fn rok_jpn_traffic_lapses_at_midnight_kst_naming_the_notice() {
    let set = AgreementSet::new(scenario());
    let d = ask(
        &set,
        "ROK.intel",
        "JPN.intel",
        "ROK:II급 비밀",
        None,
        &[],
        BEFORE,
    );
    assert!(d.allowed(), "{:?}", d.reasons);
    let d = ask(
        &set,
        "ROK.intel",
        "JPN.intel",
        "ROK:II급 비밀",
        None,
        &[],
        AFTER,
    );
    assert!(!d.allowed());
    let text: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|r| r.contains("notice of withdrawal") && r.contains("2019-11-23T00:00:00+09:00")),
        "{text:?}"
    );
    // The other direction too.
    assert!(!ask(&set, "JPN.intel", "ROK.intel", "JPN:極秘", None, &[], AFTER).allowed());
}

#[test]
fn usa_jpn_goes_on_after_rok_lapses() {
    let set = AgreementSet::new(scenario());
    assert!(
        ask(
            &set,
            "USA.intel",
            "JPN.intel",
            "USA:SECRET",
            None,
            &[],
            AFTER
        )
        .allowed()
    );
    assert!(ask(&set, "JPN.intel", "USA.intel", "JPN:秘", None, &[], AFTER).allowed());
    assert!(
        !ask(
            &set,
            "USA.intel",
            "ROK.intel",
            "USA:SECRET",
            None,
            &[],
            AFTER
        )
        .allowed()
    );
}

#[test]
fn jpn_cannot_pass_usa_information_to_prc() {
    let set = AgreementSet::new(scenario());
    let d = ask(
        &set,
        "JPN.intel",
        "PRC.navy",
        "USA:SECRET",
        Some("USA"),
        &[],
        BEFORE,
    );
    assert!(!d.allowed());
    let text = d
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("no agreement opens a channel"), "{text}");
    assert!(text.contains("has not consented"), "{text}");
}

#[test]
fn rok_prc_hotline_is_unclassified_only() {
    let set = AgreementSet::new(scenario());
    for at in [BEFORE, AFTER] {
        let d = ask(&set, "ROK.navy", "PRC.navy", "ROK:평문", None, &[], at);
        assert!(d.allowed(), "{:?}", d.reasons);
        assert_eq!(d.receiver_label.unwrap().to_string(), "PRC:非密");
        assert_eq!(d.channel.as_deref(), Some("navy-hotline"));
        for label in [
            "COMMON:CONFIDENTIAL",
            "COMMON:SECRET",
            "COMMON:TOP SECRET",
            "ROK:II급 비밀",
            "ROK:III급 비밀",
        ] {
            let d = ask(&set, "ROK.navy", "PRC.navy", label, None, &[], at);
            assert!(!d.allowed(), "{label} must be refused");
            assert!(!d.reasons.is_empty());
        }
    }
    // Before the hotlines were agreed there is no line at all.
    assert!(
        !ask(
            &set,
            "ROK.navy",
            "PRC.navy",
            "ROK:평문",
            None,
            &[],
            "2019-11-16T00:00:00+09:00"
        )
        .allowed()
    );
}

#[test]
fn recording_the_condition_keeps_rok_in_force() {
    let mut agreements = scenario();
    let a = agreements
        .iter_mut()
        .find(|a| a.id == "rok-usa-jpn-information-sharing")
        .unwrap();
    a.events.push(liaison_core::agreement::Event {
        kind: liaison_core::agreement::EventKind::ConditionRecorded {
            condition: "jpn-export-restrictions-lifted".into(),
        },
        party: PartyId::new("JPN").unwrap(),
        at: t("2019-11-22T23:00:00+09:00"),
        signature: None,
    });
    a.events.sort_by_key(|e| e.at);
    let rok = PartyId::new("ROK").unwrap();
    assert!(matches!(
        participation_at(a, &rok, t(AFTER)),
        Participation::InForce { .. }
    ));
    let set = AgreementSet::new(agreements);
    assert!(
        ask(
            &set,
            "ROK.intel",
            "JPN.intel",
            "ROK:II급 비밀",
            None,
            &[],
            AFTER
        )
        .allowed()
    );
}

#[test]
fn condition_recorded_after_midnight_is_too_late() {
    let mut agreements = scenario();
    let a = agreements
        .iter_mut()
        .find(|a| a.id == "rok-usa-jpn-information-sharing")
        .unwrap();
    a.events.push(liaison_core::agreement::Event {
        kind: liaison_core::agreement::EventKind::ConditionRecorded {
            condition: "jpn-export-restrictions-lifted".into(),
        },
        party: PartyId::new("JPN").unwrap(),
        at: t("2019-11-23T00:00:30+09:00"),
        signature: None,
    });
    let rok = PartyId::new("ROK").unwrap();
    assert!(matches!(
        participation_at(a, &rok, t("2019-11-23T01:00:00+09:00")),
        Participation::Lapsed { .. }
    ));
}

#[test]
fn third_party_release_needs_consent_or_a_grant() {
    let set = AgreementSet::new(scenario());
    // ROK passing USA-originated information to JPN: all three are parties, but USA is
    // the originator and has not consented.
    let d = ask(
        &set,
        "ROK.intel",
        "JPN.intel",
        "USA:SECRET",
        Some("USA"),
        &[],
        BEFORE,
    );
    assert!(!d.allowed());
    assert!(
        d.reasons
            .iter()
            .any(|r| r.text.contains("has not consented"))
    );
    let consent = Consent {
        originator: PartyId::new("USA").unwrap(),
        from: PartyId::new("ROK").unwrap(),
        to: PartyId::new("JPN").unwrap(),
        granted_at: t("2019-11-01T00:00:00Z"),
        expires: Some(t("2019-11-22T12:00:00Z")),
    };
    let d = ask(
        &set,
        "ROK.intel",
        "JPN.intel",
        "USA:SECRET",
        Some("USA"),
        std::slice::from_ref(&consent),
        "2019-11-22T10:00:00+09:00",
    );
    assert!(d.allowed(), "{:?}", d.reasons);
    assert!(d.reasons.iter().any(|r| r.clause == "consent"));
    // Expired consent no longer counts.
    assert!(
        !ask(
            &set,
            "ROK.intel",
            "JPN.intel",
            "USA:SECRET",
            Some("USA"),
            &[consent],
            BEFORE
        )
        .allowed()
    );
    // Returning information to its originator needs no consent.
    assert!(
        ask(
            &set,
            "ROK.intel",
            "USA.intel",
            "USA:SECRET",
            Some("USA"),
            &[],
            BEFORE
        )
        .allowed()
    );
}

#[test]
fn unknown_levels_and_same_party_and_drafts_are_refused() {
    let set = AgreementSet::new(scenario());
    assert!(
        !ask(
            &set,
            "USA.intel",
            "ROK.intel",
            "USA:COSMIC",
            None,
            &[],
            BEFORE
        )
        .allowed()
    );
    assert!(
        !ask(
            &set,
            "USA.intel",
            "ROK.intel",
            "COMMON:TOP SECRET",
            None,
            &[],
            BEFORE
        )
        .allowed()
    );
    let d = ask(&set, "ROK.navy", "ROK.air", "ROK:평문", None, &[], BEFORE);
    assert!(!d.allowed());
    assert!(d.reasons[0].text.contains("both desks of `ROK`"));
    let roadmap = set.get("korea-peace-roadmap").unwrap();
    assert_eq!(
        roadmap.participation(&PartyId::new("PRK").unwrap(), t(AFTER)),
        Participation::Draft
    );
}
