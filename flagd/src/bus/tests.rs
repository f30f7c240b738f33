use std::sync::Mutex;

use super::*;
use crate::store::ChangeKind;

#[derive(Debug, Default)]
struct Recorder {
    name: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Subscriber for Recorder {
    fn committed<'a>(
        &'a self,
        c: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // Yield: an in-line subscriber may await; the next one still waits for it.
            tokio::task::yield_now().await;
            if let Ok(mut s) = self.seen.lock() {
                s.push(format!("{} v{}", self.name, c.version));
            }
        })
    }
}

fn committed(version: u64, changed: bool) -> Committed {
    Committed {
        environment: "production".into(),
        version,
        changed,
        changed_flags: vec!["a".into()],
        changes: Some(Vec::new()),
        restores: None,
        kind: ChangeKind::Toggle,
        author: "ops".into(),
        reason: None,
        at: 0,
    }
}

#[tokio::test]
async fn in_line_subscribers_hear_each_change_in_order_before_the_background() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subs: Vec<Arc<dyn Subscriber>> = ["hub", "metrics"]
        .into_iter()
        .map(|name| {
            Arc::new(Recorder {
                name,
                seen: seen.clone(),
            }) as Arc<dyn Subscriber>
        })
        .collect();
    for s in &subs {
        bus.subscribe(s);
    }
    let mut background = bus.listen();
    bus.announce(&committed(1, true)).await;
    bus.announce(&committed(2, true)).await;
    // Nothing changed: in-line subscribers hear of it, the background does not.
    bus.announce(&committed(2, false)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "hub v1",
            "metrics v1",
            "hub v2",
            "metrics v2",
            "hub v2",
            "metrics v2"
        ]
    );
    assert_eq!(background.recv().await.unwrap().version, 1);
    assert_eq!(background.recv().await.unwrap().version, 2);
    assert!(background.try_recv().is_err());
}

#[tokio::test]
async fn a_lagging_listener_is_told_how_many_it_missed_and_never_blocks_the_writer() {
    let bus = Bus::new();
    let mut slow = bus.listen();
    let n = BACKGROUND_CAPACITY as u64 + 10;
    for v in 1..=n {
        // Never waits on the listener that reads nothing.
        bus.announce(&committed(v, true)).await;
    }
    match slow.recv().await {
        Err(broadcast::error::RecvError::Lagged(missed)) => assert_eq!(missed, 10),
        other => panic!("{other:?}"),
    }
    // Then it goes on from the oldest change still held, in order.
    assert_eq!(slow.recv().await.unwrap().version, 11);
}

#[tokio::test]
async fn a_subscriber_gone_elsewhere_is_not_kept_alive_by_the_bus() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub: Arc<dyn Subscriber> = Arc::new(Recorder {
        name: "hub",
        seen: seen.clone(),
    });
    bus.subscribe(&sub);
    let weak = Arc::downgrade(&sub);
    drop(sub);
    assert!(weak.upgrade().is_none());
    bus.announce(&committed(1, true)).await;
    assert!(seen.lock().unwrap().is_empty());
}
