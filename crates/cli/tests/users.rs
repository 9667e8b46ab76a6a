//! `liaison user`: accounts on a node's own store, with clear errors for bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::{Command, Output};

use support::{Pair, text};

fn user(args: &[&str], password: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_liaison"));
    c.arg("user").args(args);
    match password {
        Some(p) => c.env("LIAISON_PASSWORD", p),
        None => c.env_remove("LIAISON_PASSWORD"),
    };
    c.output().unwrap()
}

#[test]
fn operators_add_list_change_and_disable_accounts_with_clear_errors() {
    let pair = Pair::new();
    let dir = pair.dirs[1].to_str().unwrap().to_owned(); // ROK
    let add = |extra: &[&str], pw: &str| {
        let mut args = vec!["add", "--dir", &dir];
        args.extend_from_slice(extra);
        user(&args, Some(pw))
    };
    let good = [
        "--name",
        "kim",
        "--role",
        "duty-officer",
        "--desk",
        "ROK.intel",
        "--clearance",
        "II급 비밀",
        "--language",
        "ko",
        "--time-zone",
        "Asia/Seoul",
    ];
    let o = add(&good, "a long enough passphrase");
    assert!(o.status.success(), "{}", text(&o));
    // The same name again, a clearance not on ROK's scale, a desk of another party, a
    // role that does not exist, a short password: each refused, saying what was expected.
    let o = add(&good, "a long enough passphrase");
    assert!(
        text(&o).contains("user `kim` already exists"),
        "{}",
        text(&o)
    );
    let mut bad = good;
    bad[7] = "SECRET";
    bad[1] = "lee";
    let o = add(&bad, "a long enough passphrase");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("clearance: `SECRET` is not a level of ROK's own scale, expected one of: `평문`, `III급 비밀`, `II급 비밀`, `I급 비밀`"), "{}", text(&o));
    let mut bad = good;
    bad[1] = "lee";
    bad[5] = "USA.intel";
    assert!(
        text(&add(&bad, "a long enough passphrase"))
            .contains("desks: `USA.intel` is not a desk of ROK")
    );
    let mut bad = good;
    bad[1] = "lee";
    bad[3] = "king";
    assert!(text(&add(&bad, "a long enough passphrase")).contains("roles: `king` is not a role"));
    let mut bad = good;
    bad[1] = "lee";
    assert!(text(&add(&bad, "short")).contains("password: expected 10 to 1024 bytes"));
    let mut bad = good;
    bad[1] = "lee";
    bad[11] = "Mars/Olympus";
    assert!(
        text(&add(&bad, "a long enough passphrase"))
            .contains("time_zone: `Mars/Olympus` is not a time zone")
    );

    let list = user(&["list", "--dir", &dir], None);
    let out = text(&list);
    assert!(
        out.contains("kim") && out.contains("active") && !out.contains("lee"),
        "{out}"
    );
    assert!(!out.contains("argon2"), "hashes are never shown: {out}");

    let o = user(
        &["passwd", "--dir", &dir, "kim"],
        Some("another long passphrase"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = user(&["disable", "--dir", &dir, "kim"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&user(&["list", "--dir", &dir], None)).contains("DISABLED"));
    let o = user(&["disable", "--dir", &dir, "nobody"], None);
    assert!(text(&o).contains("no user `nobody`"), "{}", text(&o));
    let o = user(&["token", "--dir", &dir, "kim"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("lt_"),
        "{}",
        text(&o)
    );
}
