//! The stream protocol driven through channels, with no network: the hub over a real
//! SQLite store, changes committed through the store and announced on the bus.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::*;
use crate::auth::Role;
use crate::bus::{Bus, Subscriber};
use crate::store::{ChangeKind, ItemKind, StoreOptions};

/// The server's end of a stream: what the client sends comes in on `rx`, what the
/// server sends goes out on `tx`.
struct Duplex {
    rx: mpsc::UnboundedReceiver<Message>,
    tx: mpsc::UnboundedSender<Message>,
}

impl Stream for Duplex {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Message> for Duplex {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), Self::Error> {
        self.tx.send(m).map_err(axum::Error::new)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

struct Client {
    to_server: mpsc::UnboundedSender<Message>,
    from_server: mpsc::UnboundedReceiver<Message>,
}

impl Client {
    fn send(&self, m: &ClientMsg) {
        let text = serde_json::to_string(m).unwrap();
        self.to_server.send(Message::Text(text.into())).unwrap();
    }

    /// The next message from the server that is not a ping.
    async fn next(&mut self) -> ServerMsg {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.from_server.recv())
                .await
                .expect("the server answers")
                .expect("the stream is open");
            match m {
                Message::Text(t) => {
                    let msg = flagd_core::wire::decode_server(t.as_bytes()).unwrap();
                    if !matches!(msg, ServerMsg::Ping) {
                        return msg;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

async fn setup(dir: &tempfile::TempDir) -> (Arc<Store>, Arc<Hub>, Arc<Bus>) {
    let bus = Arc::new(Bus::new());
    let store = Store::connect_with(
        &format!("sqlite://{}", dir.path().join("f.db").display()),
        StoreOptions {
            listener: Some(bus.clone()),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    crate::server::bootstrap(&store, Some("fd_protocol-test-admin"))
        .await
        .unwrap();
    let hub = Arc::new(Hub::new(
        store.clone(),
        Arc::new(crate::metrics::Metrics::new()),
        Duration::from_secs(30),
        Duration::from_secs(600),
    ));
    let fan_out: Arc<dyn Subscriber> = hub.clone();
    bus.subscribe(&fan_out);
    // The bus holds subscribers weakly: the hub lives as long as the test holds it.
    (store, hub, bus)
}

async fn put(store: &Store, key: &str, state: &str) -> u64 {
    let mut tx = store.begin_write("production", None).await.unwrap();
    let flag = serde_json::json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    tx.put(ItemKind::Flag, key, Some(flag), None).await.unwrap();
    tx.commit(ChangeKind::Update, "test", None, "flag.update", key, None)
        .await
        .unwrap()
        .version
}

fn connect(hub: &Arc<Hub>) -> (Client, tokio::task::JoinHandle<()>) {
    let (to_server, rx) = mpsc::unbounded_channel();
    let (tx, from_server) = mpsc::unbounded_channel();
    let caller = Caller {
        name: "checkout".into(),
        token_id: "key-1".into(),
        user_id: None,
        created_by_user: None,
        role: Role::Sdk,
        environments: Some(vec!["production".into()]),
        session: None,
    };
    let hub = hub.clone();
    let task = tokio::spawn(async move {
        hub.serve_socket(Duplex { rx, tx }, "production".into(), caller)
            .await;
    });
    (
        Client {
            to_server,
            from_server,
        },
        task,
    )
}

fn hello(version: Option<u64>) -> ClientMsg {
    hello_from(version, None)
}

fn hello_from(version: Option<u64>, store: Option<(String, Option<i64>)>) -> ClientMsg {
    let (store, at) = store.map_or((None, None), |(s, at)| (Some(s), at));
    ClientMsg::Hello {
        instance: "i-1".into(),
        sdk: "test".into(),
        host: "h".into(),
        labels: Default::default(),
        version,
        store,
        at,
    }
}

#[tokio::test]
async fn a_stream_gets_the_snapshot_then_each_committed_change_and_its_ack_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hub, _bus) = setup(&dir).await;
    let v1 = put(&store, "new-checkout", "ENABLED").await;
    let (mut client, task) = connect(&hub);
    client.send(&hello(None));
    match client.next().await {
        ServerMsg::Snapshot {
            version, document, ..
        } => {
            assert_eq!(version, v1);
            assert_eq!(document["flags"]["new-checkout"]["state"], "ENABLED");
        }
        other => panic!("{other:?}"),
    }
    client.send(&ClientMsg::Ack {
        version: v1,
        problems: Vec::new(),
    });
    // The kill switch, committed through the store, reaches the stream as a delta.
    let v2 = put(&store, "new-checkout", "DISABLED").await;
    match client.next().await {
        ServerMsg::Delta {
            from,
            version,
            changes,
            ..
        } => {
            assert_eq!((from, version), (v1, v2));
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].definition.as_ref().unwrap()["state"], "DISABLED");
        }
        other => panic!("{other:?}"),
    }
    client.send(&ClientMsg::Ack {
        version: v2,
        problems: Vec::new(),
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = hub.fleet("production").await;
        if fleet.first().and_then(|i| i.applied_version) == Some(v2) {
            assert_eq!(fleet[0].state, "connected");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{fleet:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Gone without a goodbye: still in the fleet, unreachable.
    drop(client);
    task.await.unwrap();
    let fleet = hub.fleet("production").await;
    assert_eq!(fleet[0].state, "unreachable", "{fleet:?}");
}

#[tokio::test]
async fn a_first_message_that_is_not_a_hello_is_refused_with_a_policy_close() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, hub, _bus) = setup(&dir).await;
    let (mut client, task) = connect(&hub);
    client.send(&ClientMsg::Ping);
    match client.from_server.recv().await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, close_code::POLICY);
            assert!(f.reason.contains("hello"), "{}", f.reason);
        }
        other => panic!("{other:?}"),
    }
    task.await.unwrap();
    assert!(hub.fleet("production").await.is_empty());
}

#[tokio::test]
async fn an_sdk_holding_the_head_gets_nothing_to_catch_up_and_a_goodbye_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hub, _bus) = setup(&dir).await;
    let v1 = put(&store, "a", "ENABLED").await;
    let identity = store.identity().await.unwrap();
    let at = store.version_at("production", v1).await.unwrap();
    let (mut client, task) = connect(&hub);
    client.send(&hello_from(Some(v1), Some((identity, at))));
    // flagd reads a ping only once it has caught the stream up, and answers in order:
    // a pong first means it sent nothing to catch up. (Waiting for the fleet entry
    // raced: the entry is made before the catch-up, so a change committed in between
    // was sent as a snapshot.)
    client.send(&ClientMsg::Ping);
    match client.next().await {
        ServerMsg::Pong => {}
        other => panic!("expected nothing before the pong, got {other:?}"),
    }
    assert_eq!(hub.fleet("production").await.len(), 1);
    // Up to date: the next thing it hears of is the next change.
    let v2 = put(&store, "a", "DISABLED").await;
    match client.next().await {
        ServerMsg::Delta { from, version, .. } => assert_eq!((from, version), (v1, v2)),
        other => panic!("{other:?}"),
    }
    client.send(&ClientMsg::Goodbye);
    drop(client);
    task.await.unwrap();
    assert!(hub.fleet("production").await.is_empty());
}
