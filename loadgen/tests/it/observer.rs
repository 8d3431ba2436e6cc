//! The loadgen's latency agrees with an independent observer: a separate WebSocket
//! client (tokio-tungstenite, the system clock) joins the room during a run and
//! measures `now - client_ts` for the same messages itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use loadgen::Mix;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Server, short, transport};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn an_independent_client_measures_the_same_latency() {
    let server = Server::start();
    let room = "observer";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut socket = rt.block_on(async {
        let url = format!("ws://{}/rooms/{room}/ws", server.addr);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    });

    let mut sc = short(Mix::Only(transport("ws")), 5, room);
    sc.duration = Duration::from_secs(2);
    sc.rate = 50.0;
    let target = server.target.clone();
    let run = std::thread::spawn(move || loadgen::run(&[target], &sc).unwrap().remove(0));

    let mut seen = Vec::new();
    rt.block_on(async {
        while !run.is_finished() {
            let frame = tokio::time::timeout(Duration::from_millis(100), socket.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = frame else {
                continue;
            };
            let now = now_us();
            let m: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            seen.push(now.saturating_sub(m["client_ts"].as_u64().unwrap()));
        }
    });
    let r = run.join().unwrap();
    assert_eq!(r.deliveries.lost, 0);
    // The observer saw warm-up and counted messages alike.
    assert!(
        seen.len() as u64 >= r.messages.sent,
        "{} < {}",
        seen.len(),
        r.messages.sent
    );
    let theirs = median(&mut seen);
    let ours = r.latency_us.p50;
    // Both clients sit on the same loopback and server: their medians differ by
    // scheduling noise only (well under a millisecond on an idle machine; the bound
    // leaves room for a busy CI machine).
    let diff = ours.abs_diff(theirs);
    assert!(
        diff <= 2_000,
        "loadgen p50 {ours} us, observer p50 {theirs} us"
    );
    eprintln!("loadgen p50 {ours} us, observer p50 {theirs} us");
}
