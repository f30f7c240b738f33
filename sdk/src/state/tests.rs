use super::*;

#[test]
fn reports_stay_under_flagds_message_limit() {
    let problems: Vec<Problem> = (0..10_000)
        .map(|i| Problem {
            path: format!("flags.{}", "k".repeat(256)),
            message: format!("{i}: {}", "x".repeat(10_000)),
        })
        .collect();
    let ack = ClientMsg::Ack {
        version: 1,
        problems: reported(&problems),
    };
    let text = serde_json::to_string(&ack).unwrap();
    assert!(text.len() < 64 * 1024, "{}", text.len());
    assert!(text.contains("and 9950 more flags"));
    assert_eq!(clip("short"), "short");
}
