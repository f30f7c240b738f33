//! The load harness's real-SDK clients (`load --real-sdks`): each a `flagd_sdk::Client`,
//! which decodes every frame, applies the change to what it holds, compiles the
//! snapshot it then serves, acks, and fails over to the next replica by itself. A
//! client counts as having the change when it serves the awaited version
//! (`Client::version`), which its own change events say.

use super::*;

/// One real SDK client until aborted (dropping it closes its stream).
pub(super) async fn sdk_client(
    i: usize,
    bases: Arc<[String]>,
    key: String,
    fleet: Arc<Fleet>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut builder = flagd_sdk::Client::builder(bases[i % bases.len()].clone(), key)
        .host(format!("load-{i}"))
        .wait_for_first_snapshot(Duration::from_secs(60));
    for r in 1..bases.len() {
        builder = builder.fallback_url(bases[(i + r) % bases.len()].clone());
    }
    let Ok(sdk) = builder.build().await else {
        return;
    };
    // Serving: let the next client start.
    drop(permit);
    let mut changes = sdk.subscribe();
    loop {
        if sdk.version() >= fleet.awaited.load(Ordering::SeqCst) {
            let ns = u64::try_from(fleet.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let _ = fleet.arrived[i].compare_exchange(0, ns, Ordering::SeqCst, Ordering::SeqCst);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
