//! The console and the API as people use them: sign-in, sessions, CSRF, throttling,
//! clearances and escaping, against real nodes on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use liaison_node::users::{self, People, SessionPolicy, UserSpec};
use liaison_node::{Clock, SeededRandom};
use support::{Cluster, Page, browse};

const BEFORE_MIDNIGHT: &str = "2019-11-22T23:00:00+09:00";
const FORM: &str = "application/x-www-form-urlencoded";

async fn add_user(
    c: &Cluster,
    party: &str,
    name: &str,
    desks: &[&str],
    clearance: &str,
    lang: &str,
) {
    add_user_with(c, party, name, &["duty-officer"], desks, clearance, lang).await;
}

async fn add_user_with(
    c: &Cluster,
    party: &str,
    name: &str,
    roles: &[&str],
    desks: &[&str],
    clearance: &str,
    lang: &str,
) {
    let node = &c.running(party).node;
    let people = People::new(
        c.wall.clone(),
        Arc::new(SeededRandom::new(9)),
        SessionPolicy::default(),
        None,
    );
    let spec = UserSpec {
        name: name.into(),
        display_name: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        desks: desks.iter().map(|d| (*d).to_owned()).collect(),
        clearance: clearance.into(),
        language: lang.into(),
        time_zone: "Asia/Seoul".into(),
    };
    users::add_user(
        &node.store,
        party,
        &node.agreements(),
        &people,
        &spec,
        &format!("{name}-password"),
        "test",
    )
    .await
    .unwrap();
}

fn api(c: &Cluster, party: &str) -> String {
    c.running(party).api_addr.to_string()
}

async fn login(c: &Cluster, party: &str, name: &str, password: &str) -> Page {
    browse(
        &api(c, party),
        "POST",
        "/login",
        &[],
        Some((
            FORM,
            &format!("name={name}&password={password}&next=/inbox"),
        )),
    )
    .await
}

/// Signs in and returns (cookie header, CSRF secret).
async fn session(c: &Cluster, party: &str, name: &str) -> (String, String) {
    let p = login(c, party, name, &format!("{name}-password")).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let cookie = p.session_cookie().unwrap();
    let inbox = browse(
        &api(c, party),
        "GET",
        "/inbox",
        &[("Cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    (cookie, inbox.csrf())
}

fn flash(body: &str) -> String {
    serde_json::json!({ "from": "ROK.navy", "to": "PRC.navy", "label": "ROK:평문", "precedence": "FLASH", "body": body }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_or_token_the_api_refuses_and_the_console_asks_to_sign_in() {
    let c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    let p = browse(
        &api(&c, "ROK"),
        "POST",
        "/api/v1/messages",
        &[],
        Some(("application/json", &flash("x"))),
    )
    .await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("sign in first"), "{}", p.body);
    let p = browse(&api(&c, "ROK"), "GET", "/inbox", &[], None).await;
    assert_eq!(p.status, 303);
    assert_eq!(p.header("location").as_deref(), Some("/login?next=/inbox"));
    let p = browse(
        &api(&c, "ROK"),
        "GET",
        "/api/v1/messages?desk=ROK.navy",
        &[("Authorization", "Bearer lt_not-a-token")],
        None,
    )
    .await;
    assert_eq!(p.status, 401);
    // Health and metrics stay open for operators' probes.
    assert_eq!(
        browse(&api(&c, "ROK"), "GET", "/healthz", &[], None)
            .await
            .status,
        200
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_with_a_session_cookie_need_the_csrf_secret() {
    let c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    add_user(&c, "ROK", "navy", &["ROK.navy"], "II급 비밀", "ko").await;
    let (cookie, csrf) = session(&c, "ROK", "navy").await;
    let addr = api(&c, "ROK");
    // API without the header: refused, nothing stored.
    let p = browse(
        &addr,
        "POST",
        "/api/v1/messages",
        &[("Cookie", &cookie)],
        Some(("application/json", &flash("no csrf"))),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("CSRF"), "{}", p.body);
    // A form without the field, and one with a wrong value: refused.
    for form in [
        "from=ROK.navy&to=PRC.navy&label=ROK%3A%ED%8F%89%EB%AC%B8&precedence=FLASH&body=x&action=send",
        "csrf=wrong&from=ROK.navy&to=PRC.navy&label=ROK%3A%ED%8F%89%EB%AC%B8&precedence=FLASH&body=x&action=send",
    ] {
        let p = browse(
            &addr,
            "POST",
            "/compose",
            &[("Cookie", &cookie)],
            Some((FORM, form)),
        )
        .await;
        assert_eq!(p.status, 403, "{}", p.body);
    }
    let out = c
        .api(
            "ROK",
            "GET",
            "/api/v1/messages?desk=ROK.navy&box=outbox",
            None,
        )
        .await;
    assert_eq!(out.1, "[]", "nothing was accepted without the CSRF secret");
    // A cross-site sign-in is refused too.
    let p = browse(
        &addr,
        "POST",
        "/login",
        &[("Origin", "http://evil.example")],
        Some((FORM, "name=navy&password=navy-password")),
    )
    .await;
    assert_eq!(p.status, 403);
    // With the secret: accepted.
    let p = browse(
        &addr,
        "POST",
        "/api/v1/messages",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        Some(("application/json", &flash("with csrf"))),
    )
    .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let form = format!(
        "csrf={csrf}&from=ROK.navy&to=PRC.navy&label=ROK%3A%ED%8F%89%EB%AC%B8&precedence=FLASH&body=form&action=send"
    );
    let p = browse(
        &addr,
        "POST",
        "/compose",
        &[("Cookie", &cookie)],
        Some((FORM, &form)),
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(p.header("location").unwrap().starts_with("/messages/"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_and_when_too_old() {
    let c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    add_user(&c, "ROK", "navy", &["ROK.navy"], "II급 비밀", "en").await;
    let addr = api(&c, "ROK");
    let policy = SessionPolicy::default();
    let (cookie, _) = session(&c, "ROK", "navy").await;
    let me = |cookie: String| {
        let addr = addr.clone();
        async move { browse(&addr, "GET", "/api/v1/me", &[("Cookie", &cookie)], None).await }
    };
    assert_eq!(me(cookie.clone()).await.status, 200);
    // Active use keeps a session alive past the idle limit...
    let start = c.wall.now();
    for step in 1..=3 {
        c.wall
            .set(start + jiff::SignedDuration::from_millis(step * (policy.idle_ms - 60_000)));
        assert_eq!(me(cookie.clone()).await.status, 200, "step {step}");
    }
    // ...but idleness ends it.
    c.wall
        .set(c.wall.now() + jiff::SignedDuration::from_millis(policy.idle_ms + 1));
    let p = me(cookie.clone()).await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("expired"), "{}", p.body);
    let p = browse(&addr, "GET", "/inbox", &[("Cookie", &cookie)], None).await;
    assert_eq!(
        p.status, 303,
        "the console sends an expired session to sign in"
    );
    // However active, a session ends at its absolute lifetime.
    let (cookie, _) = session(&c, "ROK", "navy").await;
    let born = c.wall.now();
    let mut t = 0;
    while t + policy.idle_ms / 2 < policy.absolute_ms {
        t += policy.idle_ms / 2;
        c.wall.set(born + jiff::SignedDuration::from_millis(t));
        assert_eq!(me(cookie.clone()).await.status, 200);
    }
    c.wall
        .set(born + jiff::SignedDuration::from_millis(policy.absolute_ms + 1));
    assert_eq!(me(cookie).await.status, 401);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_are_throttled() {
    let c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    add_user(&c, "ROK", "navy", &["ROK.navy"], "II급 비밀", "en").await;
    for i in 0..users::LOGIN_FAILURES_MAX {
        let p = login(&c, "ROK", "navy", "wrong-password").await;
        assert_eq!(p.status, 401, "attempt {i}");
        assert!(p.body.contains("Wrong name or password"));
    }
    // Locked: even the right password waits, and the answer says for how long.
    let p = login(&c, "ROK", "navy", "navy-password").await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert_eq!(p.header("retry-after").as_deref(), Some("60"));
    // An unknown name gets the same answer as a wrong password (no account probing).
    let p = login(&c, "ROK", "nobody", "whatever-password").await;
    assert!(p.status == 401 || p.status == 429, "{}", p.status);
    c.wall
        .set(c.wall.now() + jiff::SignedDuration::from_secs(61));
    let p = login(&c, "ROK", "navy", "navy-password").await;
    assert_eq!(p.status, 303, "{}", p.body);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_bodies_are_shown_inert() {
    let c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    add_user(&c, "PRC", "wang", &["PRC.navy"], "非密", "zh-CN").await;
    let evil = r#"<script>alert(1)</script><img src=x onerror="alert(2)"> & "quotes""#;
    let id = c
        .send("ROK", "ROK.navy", "PRC.navy", "ROK:평문", "FLASH", evil)
        .await
        .unwrap();
    c.wait_inbox("PRC", "PRC.navy", 1).await;
    let (cookie, _) = session(&c, "PRC", "wang").await;
    for path in [format!("/messages/{id}"), "/inbox".to_owned()] {
        let p = browse(&api(&c, "PRC"), "GET", &path, &[("Cookie", &cookie)], None).await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(!p.body.contains("<script>alert"), "{}", p.body);
        assert!(!p.body.contains("<img src=x"), "{}", p.body);
        assert!(
            p.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || p.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{}",
            p.body
        );
        let csp = p.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert_eq!(p.header("x-frame-options").as_deref(), Some("DENY"));
        // The person's language.
        assert!(p.body.contains("lang=\"zh-CN\""), "{}", p.body);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearance_and_desks_limit_what_a_person_sees_and_sends() {
    let c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    add_user(&c, "ROK", "junior", &["ROK.intel"], "III급 비밀", "ko").await;
    add_user(&c, "ROK", "senior", &["ROK.intel"], "II급 비밀", "ko").await;
    let secret = c
        .send(
            "USA",
            "USA.intel",
            "ROK.intel",
            "USA:SECRET",
            "PRIORITY",
            "SECRET report",
        )
        .await
        .unwrap();
    let conf = c
        .send(
            "USA",
            "USA.intel",
            "ROK.intel",
            "USA:CONFIDENTIAL",
            "PRIORITY",
            "CONFIDENTIAL report",
        )
        .await
        .unwrap();
    c.wait_inbox("ROK", "ROK.intel", 2).await;
    let addr = api(&c, "ROK");
    let (junior, junior_csrf) = session(&c, "ROK", "junior").await;
    let (senior, _) = session(&c, "ROK", "senior").await;

    // The API refuses the SECRET message to the CONFIDENTIAL user, and the page too.
    let p = browse(
        &addr,
        "GET",
        &format!("/api/v1/messages/{secret}"),
        &[("Cookie", &junior)],
        None,
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("above your clearance"), "{}", p.body);
    let p = browse(
        &addr,
        "GET",
        &format!("/messages/{secret}"),
        &[("Cookie", &junior)],
        None,
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(!p.body.contains("SECRET report"));
    // Lists leave it out; the CONFIDENTIAL one is there.
    let p = browse(
        &addr,
        "GET",
        "/api/v1/messages?desk=ROK.intel",
        &[("Cookie", &junior)],
        None,
    )
    .await;
    assert!(
        p.body.contains(&conf) && !p.body.contains(&secret),
        "{}",
        p.body
    );
    let p = browse(&addr, "GET", "/inbox", &[("Cookie", &junior)], None).await;
    assert!(p.body.contains("CONFIDENTIAL report") && !p.body.contains("SECRET report"));
    // Acknowledging it is refused as well.
    let p = browse(
        &addr,
        "POST",
        &format!("/api/v1/messages/{secret}/ack"),
        &[("Cookie", &junior), ("X-CSRF-Token", &junior_csrf)],
        Some(("application/json", "{}")),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    // The SECRET-cleared colleague opens it.
    let p = browse(
        &addr,
        "GET",
        &format!("/messages/{secret}"),
        &[("Cookie", &senior)],
        None,
    )
    .await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("SECRET report"));
    // Sending above one's clearance, or from a desk not one's own, is refused.
    let send = |label: &str, from: &str| {
        serde_json::json!({ "from": from, "to": "USA.intel", "label": label, "body": "x" })
            .to_string()
    };
    let p = browse(
        &addr,
        "POST",
        "/api/v1/messages",
        &[("Cookie", &junior), ("X-CSRF-Token", &junior_csrf)],
        Some(("application/json", &send("ROK:II급 비밀", "ROK.intel"))),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("above your clearance"), "{}", p.body);
    let p = browse(
        &addr,
        "POST",
        "/api/v1/messages",
        &[("Cookie", &junior), ("X-CSRF-Token", &junior_csrf)],
        Some(("application/json", &send("ROK:평문", "ROK.minister"))),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("not one of your desks"), "{}", p.body);
    // The console's compose offers only levels up to the clearance.
    let p = browse(&addr, "GET", "/compose", &[("Cookie", &junior)], None).await;
    assert!(
        p.body.contains("III급 비밀") && !p.body.contains(">II급 비밀<"),
        "{}",
        p.body
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_shows_the_release_decision_and_refuses_above_the_ceiling() {
    let c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    add_user(&c, "USA", "sam", &["USA.intel"], "TOP SECRET", "en").await;
    let (cookie, csrf) = session(&c, "USA", "sam").await;
    let addr = api(&c, "USA");
    let preview = |label: &str| {
        serde_json::json!({ "from": "USA.intel", "to": "ROK.intel", "label": label, "body": "" })
            .to_string()
    };
    let p = browse(
        &addr,
        "POST",
        "/api/v1/decisions",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        Some(("application/json", &preview("USA:SECRET"))),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let v: serde_json::Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["receiver_label"], "ROK:II급 비밀");
    // TOP SECRET is above the intelligence channel's ceiling: the form says so, with the reason.
    let form = format!(
        "csrf={csrf}&from=USA.intel&to=ROK.intel&label=USA%3ATOP+SECRET&precedence=ROUTINE&body=too+high&action=send"
    );
    let p = browse(
        &addr,
        "POST",
        "/compose",
        &[("Cookie", &cookie)],
        Some((FORM, &form)),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("Release refused."), "{}", p.body);
    assert!(p.body.contains("ceiling"), "{}", p.body);
    let out = c
        .api(
            "USA",
            "GET",
            "/api/v1/messages?desk=USA.intel&box=outbox",
            None,
        )
        .await;
    assert_eq!(out.1, "[]");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_officers_record_signed_events_and_others_cannot() {
    let c = Cluster::start(&["JPN", "USA"], BEFORE_MIDNIGHT).await;
    add_user_with(
        &c,
        "JPN",
        "officer",
        &["agreement-officer"],
        &[],
        "極秘",
        "ja",
    )
    .await;
    add_user(&c, "JPN", "duty", &["JPN.intel"], "極秘", "ja").await;
    let addr = api(&c, "JPN");
    let form = |csrf: &str| {
        format!("csrf={csrf}&kind=condition-recorded&condition=jpn-export-restrictions-lifted")
    };
    let path = "/agreements/rok-usa-jpn-information-sharing/events";
    let (duty, duty_csrf) = session(&c, "JPN", "duty").await;
    let p = browse(
        &addr,
        "POST",
        path,
        &[("Cookie", &duty)],
        Some((FORM, &form(&duty_csrf))),
    )
    .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("agreement-officer"), "{}", p.body);
    let (officer, csrf) = session(&c, "JPN", "officer").await;
    let p = browse(
        &addr,
        "POST",
        path,
        &[("Cookie", &officer)],
        Some((FORM, &form(&csrf))),
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let text = browse(
        &addr,
        "GET",
        "/agreements/rok-usa-jpn-information-sharing.toml",
        &[("Cookie", &officer)],
        None,
    )
    .await;
    assert!(
        text.body.contains("condition-recorded")
            && text.body.contains("jpn-export-restrictions-lifted"),
        "{}",
        text.body
    );
    // The installed agreement verifies with the new, signed event, and the page shows it.
    let page = browse(&addr, "GET", "/agreements", &[("Cookie", &officer)], None).await;
    assert!(
        page.body
            .contains("condition `jpn-export-restrictions-lifted` recorded"),
        "{}",
        page.body
    );
    // A condition JPN may not record is refused with the reason, and nothing changes.
    let p = browse(
        &addr,
        "POST",
        path,
        &[("Cookie", &officer)],
        Some((
            FORM,
            &format!("csrf={csrf}&kind=condition-recorded&condition=no-such-condition"),
        )),
    )
    .await;
    assert_eq!(p.status, 422, "{}", p.body);
    c.stop().await;
}
