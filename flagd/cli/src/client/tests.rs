use super::*;

#[test]
fn reasons_outside_ascii_are_rfc_8187() {
    assert_eq!(header_reason("canary 25%"), "canary 25%");
    assert_eq!(
        header_reason("ramp før Oslo"),
        "UTF-8''ramp%20f%C3%B8r%20Oslo"
    );
}

#[test]
fn instances_before_the_version_lag() {
    let fleet = serde_json::json!({"instances": [
        {"instance": "a", "appliedVersion": 7},
        {"instance": "b", "appliedVersion": 8},
        {"instance": "c", "appliedVersion": null},
        {"instance": "d", "appliedVersion": 6},
    ]});
    let c = Convergence::of(&fleet, 7, false, Duration::ZERO);
    let lagging: Vec<&Value> = c.lagging.iter().map(|i| &i["instance"]).collect();
    assert_eq!(
        (c.total, lagging),
        (4, vec![&serde_json::json!("c"), &serde_json::json!("d")])
    );
    assert!(!c.converged());
    assert_eq!(c.to_json()["applied"], 2);
    assert!(
        Convergence::of(
            &serde_json::json!({"instances": []}),
            7,
            false,
            Duration::ZERO
        )
        .converged()
    );
}

/// The false all-clear: an instance flagd lost before it applied the version is
/// not converged, unless asked; one lost after applying it is.
#[test]
fn unreachable_instances_lag_unless_allowed() {
    let fleet = serde_json::json!({"version": 9, "instances": [
        {"instance": "up", "state": "connected", "appliedVersion": 9},
        {"instance": "hung", "state": "unreachable", "appliedVersion": 7,
         "unreachableSince": "2026-01-01T00:00:00Z"},
        {"instance": "left-after", "state": "unreachable", "appliedVersion": 9},
    ]});
    let strict = Convergence::of(&fleet, 9, false, Duration::ZERO);
    assert!(!strict.converged());
    let names = |it: &mut dyn Iterator<Item = &Value>| {
        it.map(|i| i["instance"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&mut strict.blocking()), ["hung"]);
    assert_eq!(names(&mut strict.excused()), Vec::<String>::new());
    assert_eq!(
        (
            strict.total,
            strict.unreachable,
            &strict.to_json()["applied"]
        ),
        (3, 2, &serde_json::json!(2))
    );

    let allowed = Convergence::of(&fleet, 9, true, Duration::ZERO);
    assert!(allowed.converged());
    assert_eq!(names(&mut allowed.excused()), ["hung"]);
    assert_eq!(allowed.to_json()["converged"], true);

    // A connected instance behind still blocks, allowed or not.
    let fleet = serde_json::json!({"instances": [
        {"instance": "slow", "state": "connected", "appliedVersion": 8},
        {"instance": "hung", "state": "unreachable", "appliedVersion": 8},
    ]});
    let c = Convergence::of(&fleet, 9, true, Duration::ZERO);
    assert_eq!(names(&mut c.blocking()), ["slow"]);
    assert!(!c.converged());
    // A fleet view from an older flagd has no state: connected.
    let old = serde_json::json!({"instances": [{"instance": "x", "appliedVersion": 8}]});
    assert!(!Convergence::of(&old, 9, true, Duration::ZERO).converged());
}

#[test]
fn keys_are_one_percent_encoded_segment_each() {
    let c = Client::new(&Connection {
        url: "http://127.0.0.1:1/behind/proxy".into(),
        token: None,
        environment: None,
        ca_cert: None,
        request_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let url = c
        .url(&["environments", "production", "flags", "a/b ?#%ü", "disable"])
        .unwrap();
    assert_eq!(
        url.path(),
        "/behind/proxy/api/v1/environments/production/flags/a%2Fb%20%3F%23%25%C3%BC/disable"
    );
    assert_eq!(url.query(), None);
    assert_eq!(url.fragment(), None);
    // The URL standard would drop these segments (and `%2E`): refused, not sent.
    for bad in ["", ".", ".."] {
        let e = c
            .url(&["environments", "production", "flags", bad])
            .unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE, "{bad:?}");
    }
}

#[test]
fn statuses_map_to_exit_codes() {
    let api = |s: u16| Failure::Api {
        status: StatusCode::from_u16(s).unwrap(),
        code: String::new(),
        message: String::new(),
        body: Value::Null,
    };
    assert_eq!(api(409).exit_code(), exit::CONFLICT);
    assert_eq!(api(404).exit_code(), exit::NOT_FOUND);
    assert_eq!(api(401).exit_code(), exit::UNAUTHORIZED);
    assert_eq!(api(403).exit_code(), exit::UNAUTHORIZED);
    assert_eq!(api(422).exit_code(), exit::FAILED);
    assert_eq!(api(400).exit_code(), exit::FAILED);
    assert_eq!(api(413).exit_code(), exit::FAILED);
    assert_eq!(api(500).exit_code(), exit::UNREACHABLE);
    assert_eq!(api(503).exit_code(), exit::UNREACHABLE);
    assert_eq!(
        Failure::NotApplied(String::new()).exit_code(),
        exit::NOT_APPLIED
    );
    assert_eq!(
        Failure::NotFound(String::new()).exit_code(),
        exit::NOT_FOUND
    );
    let codes = [
        exit::OK,
        exit::FAILED,
        exit::USAGE,
        exit::CONFLICT,
        exit::NOT_FOUND,
        exit::UNREACHABLE,
        exit::NOT_APPLIED,
        exit::UNAUTHORIZED,
    ];
    assert_eq!(
        codes,
        [0, 1, 2, 3, 4, 5, 6, 7],
        "documented; never renumbered"
    );
}

/// A provider over gRPC cannot acknowledge: it never counts as having applied a
/// version; once sent it, waiting ends (settled), converged only when allowed.
#[test]
fn providers_that_cannot_acknowledge_converge_only_when_allowed() {
    let fleet = serde_json::json!({"version": 9, "instances": [
        {"instance": "sdk", "state": "connected", "appliedVersion": 9},
        {"instance": "grpc-1", "state": "connected", "acknowledges": false, "sentVersion": 9, "appliedVersion": null},
        {"instance": "grpc-2", "state": "connected", "acknowledges": false, "sentVersion": 8, "appliedVersion": null},
    ]});
    let c = Convergence::of(&fleet, 9, false, Duration::ZERO);
    assert_eq!(c.lagging.len(), 0, "providers are not lagging SDKs");
    let unsent: Vec<&Value> = c.unsent().map(|i| &i["instance"]).collect();
    assert_eq!(unsent, [&serde_json::json!("grpc-2")]);
    assert!(!c.settled());
    assert!(!c.converged());
    assert!(
        !Convergence::of(&fleet, 9, false, Duration::ZERO)
            .allowing_unacknowledged(true)
            .converged()
    );

    let mut sent = fleet;
    sent["instances"][2]["sentVersion"] = serde_json::json!(9);
    let strict = Convergence::of(&sent, 9, false, Duration::ZERO);
    assert!(strict.settled(), "nothing more can happen: the wait ends");
    assert!(
        !strict.converged(),
        "but nobody knows the providers applied it"
    );
    assert_eq!(strict.to_json()["applied"], 1);
    let allowed = Convergence::of(&sent, 9, false, Duration::ZERO).allowing_unacknowledged(true);
    assert!(allowed.converged());

    // An unreachable provider that was never sent the version holds the wait up,
    // unless unreachable instances are allowed.
    let mut lost = sent.clone();
    lost["instances"][1]["state"] = serde_json::json!("unreachable");
    lost["instances"][1]["sentVersion"] = serde_json::json!(8);
    assert!(
        !Convergence::of(&lost, 9, false, Duration::ZERO)
            .allowing_unacknowledged(true)
            .converged()
    );
    assert!(
        Convergence::of(&lost, 9, true, Duration::ZERO)
            .allowing_unacknowledged(true)
            .converged()
    );
}

/// A proxy on loopback that answers each connection with the next of `answers` (status
/// and body), then closes it; counts the requests it was sent.
fn proxy(
    answers: Vec<(u16, &'static str)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            // The whole request: headers, then the Content-Length bytes of body.
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

fn client_of(url: &str) -> Client {
    Client::new(&Connection {
        url: url.into(),
        token: None,
        environment: Some("production".into()),
        ca_cert: None,
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

const DISABLE: [&str; 5] = ["environments", "production", "flags", "f", "disable"];
const DONE: &str = r#"{"environment":"production","version":7,"changed":true}"#;

/// A kill switch through a load balancer whose replica just died: the 502s are ridden
/// out and the answer is the one the next replica gave.
#[tokio::test]
async fn a_kill_switch_is_sent_again_after_a_proxy_s_502() {
    let (url, seen) = proxy(vec![(502, "bad gateway"), (503, "{}"), (200, DONE)]);
    let req = Request::new(Method::POST, &DISABLE)
        .json(&serde_json::json!({"reason": "r"}))
        .repeatable();
    let a = client_of(&url).call(req).await.unwrap();
    assert_eq!(a.body["version"], 7);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A revert is sent again the same way: its second attempt, after a first that
/// committed, finds the set at the version's content already and changes nothing.
#[tokio::test]
async fn a_revert_is_sent_again_after_a_proxy_s_502() {
    let (url, seen) = proxy(vec![(502, "bad gateway"), (200, DONE)]);
    let path = crate::online::revert_path("production");
    let req = crate::online::revert_request(&path, 3, "bad release", false);
    let a = client_of(&url).call(req).await.unwrap();
    assert_eq!(a.body["version"], 7);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Not repeatable, or guarded by If-Match (a lost commit would make the next attempt a
/// 409), or refused by flagd itself: one request, its answer as it is.
#[tokio::test]
async fn other_failures_are_answered_at_once() {
    let cases: [(u16, bool, Option<u64>); 3] =
        [(502, false, None), (502, true, Some(6)), (422, true, None)];
    for (status, repeatable, if_version) in cases {
        let (url, seen) = proxy(vec![(status, "{}"), (200, DONE)]);
        let mut req = Request::new(Method::POST, &DISABLE)
            .json(&serde_json::json!({"reason": "r"}))
            .if_version(if_version);
        if repeatable {
            req = req.repeatable();
        }
        let e = client_of(&url).call(req).await.unwrap_err();
        assert!(
            matches!(&e, Failure::Api { status: s, .. } if s.as_u16() == status),
            "{status} {repeatable} {if_version:?}: {e:?}"
        );
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{status}"
        );
    }
}

/// Every attempt failing: the last failure after four attempts, not a hang.
#[tokio::test]
async fn a_proxy_that_keeps_failing_fails_the_call_after_four_attempts() {
    let (url, seen) = proxy(vec![(504, "{}"); 6]);
    let req = Request::new(Method::POST, &DISABLE).repeatable();
    let e = client_of(&url).call(req).await.unwrap_err();
    assert_eq!(e.exit_code(), exit::UNREACHABLE);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 4);
}
