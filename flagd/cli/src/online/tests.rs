use super::*;

#[test]
fn a_cell_wider_than_format_allows_is_padded_not_a_panic() {
    // `format!("{c:<w$}")` panics for a width above u16::MAX: a 64 KiB flag key once
    // made `flags list` exit 101.
    let wide = "k".repeat(70_000);
    let t = table(
        &["FLAG", "STATE"],
        &[
            vec![wide.clone(), "ENABLED".into()],
            vec!["grå".into(), "DISABLED".into()],
        ],
    );
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[1], format!("{wide}  ENABLED"));
    assert_eq!(
        lines[2],
        format!("grå{}DISABLED", " ".repeat(70_000 - 3 + 2))
    );
    assert_eq!(lines[0].trim_end(), lines[0], "no trailing spaces");
}

#[test]
fn keys_flagd_refuses_are_refused_before_sending() {
    for bad in ["", ".", "..", "a\u{7}b", &"k".repeat(257)] {
        assert!(flag_key(bad).is_err(), "{bad:?}");
    }
    for good in ["a/b", "100%", "?x#y", "with space", "..a", &"k".repeat(256)] {
        assert_eq!(flag_key(good).as_deref(), Ok(good));
    }
}

#[test]
fn unreachable_instances_say_since_when_and_what_they_applied() {
    let i = json!({"instance": "i-2", "host": "h", "sdk": "flagd-sdk-rust/1", "state": "unreachable",
                   "unreachableSince": "2026-01-01T00:00:00Z", "appliedVersion": 7});
    assert_eq!(
        instance_line(&i),
        "i-2 (host h, flagd-sdk-rust/1): unreachable since 2026-01-01T00:00:00Z, last applied v7"
    );
    let never = json!({"instance": "i-3", "state": "unreachable", "appliedVersion": null});
    assert!(instance_line(&never).ends_with("never applied a version"));
    let up = json!({"instance": "i-1", "host": "h", "sdk": "s", "state": "connected", "appliedVersion": 6, "lastAck": "T"});
    assert_eq!(
        instance_line(&up),
        "i-1 (host h, s): on version 6, last ack T"
    );
}
