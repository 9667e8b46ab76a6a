//! Errors people can act on: every problem at once, located; never a panic.

// Integration tests: a panic is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use liaison_core::parse::parse_agreement;

const GOOD: &str = include_str!("../../../examples/scenario/rok-usa-jpn-information-sharing.toml");

#[test]
fn a_broken_copy_reports_every_problem_with_its_location() {
    let broken = GOOD
        .replace(
            "desks = [\"ROK.intel\", \"USA.intel\", \"JPN.intel\"]",
            "desks = [\"ROK.intel\", \"USA.intel\", \"GBR.intel\"]",
        )
        .replace(
            "ceiling = \"SECRET\"\n\n[[channels]]",
            "ceiling = \"COSMIC\"\n\n[[channels]]",
        )
        .replace(
            "\"秘\" = \"CONFIDENTIAL\"\n\"極秘\" = \"SECRET\"",
            "\"秘\" = \"SECRET\"\n\"極秘\" = \"CONFIDENTIAL\"",
        )
        .replace("notice = \"90 days\"", "notice = \"2 years\"")
        .replace("at = 2019-08-23T09:00:00+09:00", "at = \"2019-13-45\"");
    let err = parse_agreement("broken.toml", &broken).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    for needle in [
        "unknown desk `GBR.intel`",
        "`COSMIC` is not on the common scale",
        "must map strictly upward",
        "notice period",
        "is not an RFC 3339 instant",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "missing `{needle}` in:\n{text}"
        );
    }
    for l in &lines {
        let mut parts = l.splitn(4, ':');
        assert_eq!(parts.next(), Some("broken.toml"), "{l}");
        assert!(parts.next().unwrap().parse::<usize>().unwrap() >= 1, "{l}");
        assert!(parts.next().unwrap().parse::<usize>().unwrap() >= 1, "{l}");
    }
    // The ceiling line is located exactly.
    let ceiling_line = broken.lines().position(|l| l.contains("COSMIC")).unwrap() + 1;
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "broken.toml:{ceiling_line}:11: channels[0].ceiling:"
        ))),
        "{text}"
    );
}

#[test]
fn duplicate_parties_and_foreign_desks_are_reported() {
    let broken = GOOD.replace("id = \"JPN\"", "id = \"USA\"");
    let text = parse_agreement("d.toml", &broken).unwrap_err().to_string();
    assert!(text.contains("duplicate party `USA`"), "{text}");
    assert!(text.contains("desk `JPN.intel` belongs to `JPN`"), "{text}");
}

#[test]
fn gaps_unknown_fields_and_missing_fields_are_reported() {
    let broken = GOOD
        .replace("\"III급 비밀\" = \"CONFIDENTIAL\"\n", "")
        .replace("title = ", "titel = ")
        .replace(
            "kind = \"exchange\"\ndesks = [\"ROK.minister\"",
            "kind = \"hotline\"\ndesks = [\"ROK.minister\"",
        );
    let text = parse_agreement("b.toml", &broken).unwrap_err().to_string();
    assert!(text.contains("gap in `ROK`'s mapping"), "{text}");
    assert!(text.contains("titel: unknown field"), "{text}");
    assert!(text.contains("title: missing"), "{text}");
    assert!(text.contains("test_interval: missing"), "{text}");
}

#[test]
fn garbage_binary_empty_huge_and_deep_input_are_errors() {
    let deep = format!("a = {}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!("title = \"{}\"", "x".repeat(5 * 1024 * 1024));
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("blank", "  \n\n".into()),
        ("garbage", "}{ not toml at all ][".into()),
        (
            "binary",
            String::from_utf8_lossy(&[0, 159, 146, 150, 0, 1, 2, 255]).into_owned(),
        ),
        ("deep", deep),
        ("huge", huge),
        (
            "wrong types",
            "id = 3\nversion = \"one\"\ntitle = []\nparties = 5\n[term]\neffective = true".into(),
        ),
    ];
    for (name, text) in cases {
        let err = parse_agreement(name, &text).unwrap_err();
        assert!(!err.0.is_empty(), "{name}");
        assert!(
            err.to_string().starts_with(&format!("{name}:")),
            "{name}: {err}"
        );
    }
}
