//! Real nodes on loopback in one process: real SQLite stores, real mutual TLS, the
//! scenario's agreements signed with each party's key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use liaison_store::Store;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_both_ways_in_receivers_markings() {
    let c = Cluster::start(&["ROK", "USA", "JPN"], BEFORE_MIDNIGHT).await;
    let a = c
        .send(
            "USA",
            "USA.intel",
            "ROK.intel",
            "USA:SECRET",
            "FLASH",
            "report 1",
        )
        .await
        .unwrap();
    let b = c
        .send(
            "ROK",
            "ROK.intel",
            "USA.intel",
            "ROK:II급 비밀",
            "ROUTINE",
            "answer 1",
        )
        .await
        .unwrap();
    let d = c
        .send(
            "JPN",
            "JPN.intel",
            "USA.intel",
            "JPN:秘",
            "PRIORITY",
            "note",
        )
        .await
        .unwrap();
    let e = c
        .send(
            "USA",
            "USA.intel",
            "JPN.intel",
            "USA:SECRET",
            "IMMEDIATE",
            "report 2",
        )
        .await
        .unwrap();
    c.wait_inbox("ROK", "ROK.intel", 1).await;
    c.wait_inbox("USA", "USA.intel", 2).await;
    c.wait_inbox("JPN", "JPN.intel", 1).await;
    let rok = c.inbox("ROK", "ROK.intel").await;
    assert_eq!(rok.len(), 1);
    assert_eq!(rok[0]["id"], a);
    assert_eq!(rok[0]["label"], "ROK:II급 비밀");
    // What ROK keeps is USA's signed envelope, checkable alone: with its body put
    // back (kept once, in a column of its own) it verifies against USA's key.
    let row = c
        .running("ROK")
        .node
        .store
        .inbox_get(a.as_str())
        .await
        .unwrap()
        .unwrap();
    let mut kept =
        liaison_core::envelope::Envelope::from_json(row.envelope_json.as_bytes()).unwrap();
    assert!(kept.body.is_empty(), "the body is stored once");
    kept.body = row.body.clone();
    kept.verify(&c.party_key("USA").public()).unwrap();
    let usa = c.inbox("USA", "USA.intel").await;
    let labels: Vec<(&str, &str)> = usa
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["label"].as_str().unwrap()))
        .collect();
    assert!(labels.contains(&(b.as_str(), "USA:SECRET")), "{labels:?}");
    assert!(
        labels.contains(&(d.as_str(), "USA:CONFIDENTIAL")),
        "{labels:?}"
    );
    let jpn = c.inbox("JPN", "JPN.intel").await;
    assert_eq!(jpn[0]["id"], e);
    assert_eq!(jpn[0]["label"], "JPN:極秘");
    // Each sender holds a signed receipt.
    c.wait_state("USA", &a, "delivered").await;
    // A person acknowledges; the acknowledgement travels back as a signed receipt.
    let (status, _) = c
        .api(
            "ROK",
            "POST",
            &format!("/api/v1/messages/{a}/ack"),
            Some(r#"{"by":"duty officer Kim"}"#),
        )
        .await;
    assert_eq!(status, 200);
    c.wait_state("USA", &a, "acknowledged").await;
    let m = c.message("USA", &a).await;
    assert_eq!(m["acknowledged_by"], "duty officer Kim");
    assert_eq!(m["receipts"].as_array().unwrap().len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_flash_first_when_a_peer_returns() {
    let mut c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    c.kill("ROK").await;
    let mut routine = Vec::new();
    for i in 0..40 {
        routine.push(
            c.send(
                "USA",
                "USA.intel",
                "ROK.intel",
                "USA:CONFIDENTIAL",
                "ROUTINE",
                &format!("routine {i}"),
            )
            .await
            .unwrap(),
        );
    }
    let mut flash = Vec::new();
    for i in 0..5 {
        flash.push(
            c.send(
                "USA",
                "USA.intel",
                "ROK.intel",
                "USA:SECRET",
                "FLASH",
                &format!("flash {i}"),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.restart("ROK").await;
    // Retries are scheduled on the nodes' clock, which this test moves by hand.
    c.clock.advance_ms(60_000);
    c.wait_inbox("ROK", "ROK.intel", 45).await;
    let inbox = c.inbox("ROK", "ROK.intel").await;
    let seq = |id: &String| {
        inbox.iter().find(|m| m["id"] == *id).unwrap()["seq"]
            .as_i64()
            .unwrap()
    };
    let last_flash = flash.iter().map(seq).max().unwrap();
    let first_routine = routine.iter().map(seq).min().unwrap();
    assert!(
        last_flash < first_routine,
        "FLASH must arrive before the ROUTINE backlog"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_bounces_with_reason_after_the_agreement_lapses() {
    let mut c = Cluster::start(&["ROK", "JPN"], "2019-11-23T00:00:00+09:00").await;
    c.kill("JPN").await;
    // Just before midnight the decision allows it; JPN is unreachable, so it waits.
    c.clock.set("2019-11-22T23:59:58+09:00".parse().unwrap());
    let id = c
        .send(
            "ROK",
            "ROK.intel",
            "JPN.intel",
            "ROK:II급 비밀",
            "ROUTINE",
            "last report",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.clock.set("2019-11-23T00:00:05+09:00".parse().unwrap());
    c.wait_state("ROK", &id, "bounced").await;
    let m = c.message("ROK", &id).await;
    let reasons = m["reasons"].to_string();
    assert!(reasons.contains("notice of withdrawal"), "{reasons}");
    // And new traffic is refused at acceptance with the reason.
    let err = c
        .send(
            "ROK",
            "ROK.intel",
            "JPN.intel",
            "ROK:II급 비밀",
            "ROUTINE",
            "too late",
        )
        .await
        .unwrap_err();
    assert!(err.contains("lapsed"), "{err}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "bad request body"),
        (
            r#"{"from":"USA.intel","to":"ROK.nowhere","label":"USA:SECRET","body":"x"}"#,
            422,
            "unknown desk",
        ),
        (
            r#"{"from":"USA.intel","to":"ROK.intel","label":"SECRET","body":"x"}"#,
            422,
            "label",
        ),
        (
            r#"{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","precedence":"URGENT","body":"x"}"#,
            422,
            "precedence",
        ),
        (
            r#"{"from":"ROK.intel","to":"USA.intel","label":"USA:SECRET","body":"x"}"#,
            422,
            "not a desk of this node",
        ),
        (
            r#"{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","body":"x","extra":1}"#,
            400,
            "unknown field",
        ),
        (
            r#"{"from":"USA.intel","to":"ROK.intel","label":"USA:TOP SECRET","body":"x"}"#,
            403,
            "refused",
        ),
    ];
    for (body, status, needle) in cases {
        let (s, text) = c.api("USA", "POST", "/api/v1/messages", Some(body)).await;
        assert_eq!(s, status, "{body} → {text}");
        assert!(text.contains(needle), "{body} → {text}");
    }
    let huge = format!(
        r#"{{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","body":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (s, _) = c.api("USA", "POST", "/api/v1/messages", Some(&huge)).await;
    assert_eq!(s, 413);
    let (s, text) = c
        .api(
            "USA",
            "GET",
            "/api/v1/messages?desk=USA.intel&box=outbox",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(text, "[]", "nothing was queued");
    let (s, _) = c
        .api("USA", "GET", "/api/v1/messages?desk=ROK.intel", None)
        .await;
    assert_eq!(s, 404);
    let (s, text) = c.api("USA", "GET", "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(text.contains("liaison_messages_refused_total 1"), "{text}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_keys_and_tampered_envelopes_are_refused_and_logged() {
    let c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    // An impostor claiming to be ROK, with a key no agreement pins.
    let impostor = liaison_link::Identity::from_ed25519_seed("ROK", [66; 32]).unwrap();
    let pins = liaison_link::Pins::new();
    let usa_key = c.public_key("USA");
    pins.replace([(usa_key, "USA".to_owned())].into_iter().collect());
    let client = liaison_link::Client::new(
        impostor,
        pins,
        std::sync::Arc::new(liaison_link::LinkStats::new()),
    );
    let addr = c.federation_addr("USA");
    let r = client
        .post(
            "USA",
            std::slice::from_ref(&addr),
            "/federation/v1/envelopes",
            bytes::Bytes::from_static(b"{\"envelopes\":[]}"),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        r.is_err(),
        "an unpinned key must be refused at the handshake"
    );
    c.wait_metric("USA", "liaison_link_handshakes_refused_total 1")
        .await;

    // The real ROK key, but an envelope altered after signing.
    let rok = c.party_key("ROK");
    let client = liaison_link::Client::new(
        liaison_link::Identity::from_ed25519_seed("ROK", rok.seed()).unwrap(),
        {
            let p = liaison_link::Pins::new();
            p.replace([(usa_key, "USA".to_owned())].into_iter().collect());
            p
        },
        std::sync::Arc::new(liaison_link::LinkStats::new()),
    );
    let env = c.envelope(
        &rok,
        "ROK.intel",
        "USA.intel",
        "ROK:III급 비밀",
        "the original",
    );
    let mut signed = c.signed_batch(&rok, &[&env]);
    signed.envelopes[0].body = "something else".to_owned();
    let batch = signed.to_json();
    let (status, body) = client
        .post(
            "USA",
            &[addr],
            "/federation/v1/envelopes",
            bytes::Bytes::from(batch),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    // One signed batch: the refusal is receipted, for exactly what arrived.
    let batch = liaison_core::envelope::ReceiptBatch::from_json(&body).unwrap();
    let receipts = batch.verify_split(&[c.party_key("USA").public()]).unwrap();
    assert_eq!(
        receipts[0].body.kind,
        liaison_core::envelope::ReceiptKind::Refused
    );
    receipts[0]
        .verify(&c.party_key("USA").public(), &env)
        .unwrap();
    let (_, metrics) = c.api("USA", "GET", "/metrics", None).await;
    assert!(
        metrics.contains("liaison_envelopes_tampered_total 1"),
        "{metrics}"
    );
    assert!(c.inbox("USA", "USA.intel").await.is_empty());
    let audit = c.audit_kinds("USA").await;
    assert!(audit.contains(&"tampered-envelope".to_owned()), "{audit:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotline_heartbeats_and_flash_escalation() {
    let mut c = Cluster::start(&["ROK", "PRC"], BEFORE_MIDNIGHT).await;
    c.wait_hotline("ROK", "navy-hotline", "up").await;
    c.wait_hotline("PRC", "navy-hotline", "up").await;
    let id = c
        .send(
            "ROK",
            "ROK.navy",
            "PRC.navy",
            "ROK:평문",
            "FLASH",
            "unidentified vessel",
        )
        .await
        .unwrap();
    c.wait_inbox("PRC", "PRC.navy", 1).await;
    // The deadline is 5 minutes of the nodes' clock.
    c.clock.advance_ms(6 * 60 * 1000);
    c.wait_escalation("PRC", &id).await;
    let (_, metrics) = c.api("PRC", "GET", "/metrics", None).await;
    assert!(metrics.contains("liaison_escalations_total 1"), "{metrics}");
    // A hotline whose peer vanishes is down at once.
    c.kill("PRC").await;
    c.clock.advance_ms(61 * 60 * 1000);
    c.wait_hotline("ROK", "navy-hotline", "down").await;
    c.stop().await;
}

/// A sender that can no longer send an envelope asks the receiver about it (by id and
/// digest, no content): held → a stored receipt for the copy held; not held → a signed
/// "not held", after which the receiver refuses that id for good. After the agreement
/// lapses the link stays open for such questions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_settles_envelopes_it_can_no_longer_send() {
    use liaison_core::envelope::{ReceiptBatch, ReceiptKind};
    let c = Cluster::start(&["ROK", "JPN"], "2019-11-22T23:59:00+09:00").await;
    let rok = c.party_key("ROK");
    let jpn = c.party_key("JPN").public();
    let client = liaison_link::Client::new(
        liaison_link::Identity::from_ed25519_seed("ROK", rok.seed()).unwrap(),
        liaison_link::Pins::from_map([(c.public_key("JPN"), "JPN".to_owned())].into()),
        std::sync::Arc::new(liaison_link::LinkStats::new()),
    );
    let addr = c.federation_addr("JPN");
    let post = |path: &'static str, body: String| {
        let (client, addr) = (client.clone(), addr.clone());
        async move {
            client
                .post(
                    "JPN",
                    &[addr],
                    path,
                    bytes::Bytes::from(body),
                    Duration::from_secs(5),
                )
                .await
                .unwrap()
        }
    };
    let receipts = |bytes: &[u8]| {
        ReceiptBatch::from_json(bytes)
            .unwrap()
            .verify_split(std::slice::from_ref(&jpn))
            .unwrap()
    };
    let (from, to, label) = ("ROK.intel", "JPN.intel", "ROK:II급 비밀");
    let held = c.envelope_numbered(1, &rok, from, to, label, "arrived");
    let lost = c.envelope_numbered(2, &rok, from, to, label, "never left");
    let (status, _) = post(
        "/federation/v1/envelopes",
        c.signed_batch(&rok, &[&held]).to_json(),
    )
    .await;
    assert_eq!(status, 200);
    let question = |envs: &[&liaison_core::envelope::Envelope]| {
        serde_json::json!({ "envelopes": envs.iter().map(|e| serde_json::json!({
            "id": e.header.id.to_string(), "digest": e.digest()
        })).collect::<Vec<_>>() })
        .to_string()
    };
    let (status, body) = post("/federation/v1/settle", question(&[&held, &lost])).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answers = receipts(&body);
    assert_eq!(answers[0].body.kind, ReceiptKind::Stored);
    answers[0].verify(&jpn, &held).unwrap();
    assert_eq!(answers[1].body.kind, ReceiptKind::Refused);
    answers[1].verify(&jpn, &lost).unwrap();
    assert!(
        answers[1].body.reasons[0].contains("never received"),
        "{:?}",
        answers[1].body.reasons
    );
    // A copy of the lost one still in flight never lands.
    let (status, body) = post(
        "/federation/v1/envelopes",
        c.signed_batch(&rok, &[&lost]).to_json(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(receipts(&body)[0].body.kind, ReceiptKind::Refused);
    let inbox = c.inbox("JPN", "JPN.intel").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");

    // Past midnight ROK no longer takes part: nothing new crosses, questions still do.
    c.clock.set("2019-11-23T00:00:05+09:00".parse().unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late = c.envelope_numbered(3, &rok, from, to, label, "too late");
    let (status, body) = post(
        "/federation/v1/envelopes",
        c.signed_batch(&rok, &[&late]).to_json(),
    )
    .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("only questions about envelopes sent earlier"));
    let (status, body) = post("/federation/v1/settle", question(&[&held])).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(receipts(&body)[0].body.kind, ReceiptKind::Stored);
    let audit = c.audit_kinds("JPN").await;
    assert!(audit.contains(&"envelopes-settled".to_owned()), "{audit:?}");
    c.stop().await;
}
