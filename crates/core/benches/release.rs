//! Release decisions against 100 agreements × 10 channels.
//!
//! `cargo bench -p liaison-core --bench release`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use liaison_core::ids::DeskId;
use liaison_core::label::Label;
use liaison_core::parse::parse_agreement;
use liaison_core::release::{AgreementSet, ReleaseRequest, decide};

const PARTIES: usize = 20;

fn agreement(i: usize) -> String {
    let a = i % PARTIES;
    let b = (i * 7 + 3) % PARTIES;
    let b = if a == b { (b + 1) % PARTIES } else { b };
    let (pa, pb) = (format!("P{a:02}"), format!("P{b:02}"));
    let desks = |p: &str| {
        (0..10)
            .map(|d| format!("\"{p}.d{d}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "id = \"ag-{i}\"\nversion = 1\ntitle = \"bench {i}\"\n\
         [[parties]]\nid = \"{pa}\"\nname = \"{pa}\"\ndesks = [{}]\n\
         [[parties]]\nid = \"{pb}\"\nname = \"{pb}\"\ndesks = [{}]\n",
        desks(&pa),
        desks(&pb)
    );
    for c in 0..10 {
        s += &format!(
            "[[channels]]\nid = \"c{c}\"\nkind = \"exchange\"\ndesks = [\"{pa}.d{c}\", \"{pb}.d{c}\"]\nceiling = \"S\"\n"
        );
    }
    s += &format!(
        "[classification]\ncommon = [\"U\", \"C\", \"S\", \"TS\"]\n\
         [classification.levels.{pa}]\n\"u\" = \"U\"\n\"c\" = \"C\"\n\"s\" = \"S\"\n\"ts\" = \"TS\"\n\
         [classification.levels.{pb}]\n\"u\" = \"U\"\n\"c\" = \"C\"\n\"s\" = \"S\"\n\"ts\" = \"TS\"\n\
         [term]\neffective = 2016-11-23T00:00:00+09:00\nlength = \"1 year\"\nauto_renew = true\nnotice = \"90 days\"\n\
         [[events]]\nkind = \"signed\"\nparty = \"{pa}\"\nat = 2016-11-23T00:00:00+09:00\n\
         [[events]]\nkind = \"signed\"\nparty = \"{pb}\"\nat = 2016-11-23T00:00:00+09:00\n"
    );
    if i.is_multiple_of(3) {
        s += &format!(
            "[[events]]\nkind = \"notice-of-withdrawal\"\nparty = \"{pa}\"\nat = 2019-08-23T09:00:00+09:00\n"
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let set = AgreementSet::new((0..100).map(|i| parse_agreement("bench", &agreement(i)).unwrap()));
    let at: Timestamp = "2019-11-22T23:59:59+09:00".parse().unwrap();
    // A mix: allowed, above-ceiling, unmapped, and no-channel requests.
    let mut reqs: Vec<(DeskId, DeskId, Label)> = Vec::new();
    for i in 0..1000usize {
        let a = i % PARTIES;
        let b = (i * 7 + 3) % PARTIES;
        let b = if a == b { (b + 1) % PARTIES } else { b };
        let ch = i % 10;
        let label = match i % 4 {
            0 | 1 => format!("P{a:02}:s"),
            2 => format!("P{a:02}:ts"),
            _ => "COMMON:S".to_owned(),
        };
        let to = if i % 10 == 9 {
            format!("P{b:02}.d{}", (ch + 1) % 10)
        } else {
            format!("P{b:02}.d{ch}")
        };
        reqs.push((
            DeskId::new(&format!("P{a:02}.d{ch}")).unwrap(),
            DeskId::new(&to).unwrap(),
            label.parse().unwrap(),
        ));
    }
    let allowed = reqs
        .iter()
        .filter(|(f, t, l)| {
            decide(
                &set,
                &ReleaseRequest {
                    from: f,
                    to: t,
                    label: l,
                    originator: None,
                    consents: &[],
                },
                at,
            )
            .allowed()
        })
        .count();
    println!(
        "release bench: {} agreements, {allowed}/{} sample requests allowed",
        set.len(),
        reqs.len()
    );
    let mut i = 0usize;
    c.bench_function("release decision (100 agreements x 10 channels)", |bch| {
        bch.iter(|| {
            let (f, t, l) = &reqs[i % reqs.len()];
            i += 1;
            black_box(decide(
                black_box(&set),
                &ReleaseRequest {
                    from: f,
                    to: t,
                    label: l,
                    originator: None,
                    consents: &[],
                },
                at,
            ))
        })
    });
    let (f, t, l) = &reqs[0];
    c.bench_function("release decision, allowed", |bch| {
        bch.iter(|| {
            black_box(decide(
                &set,
                &ReleaseRequest {
                    from: f,
                    to: t,
                    label: l,
                    originator: None,
                    consents: &[],
                },
                at,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
