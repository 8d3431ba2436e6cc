//! Micro-benchmarks of the room's hot paths: fan-out, encoding, per-client queues,
//! history lookup. `cargo bench --bench room`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lab::room::{Draft, Published, Room, RoomLimits, Rooms, Subscription};
use lab::transport::common::poll_body;

fn draft(bytes: usize) -> Draft {
    Draft {
        user: "alice".into(),
        text: "x".repeat(bytes),
        client_ts: Some(1_763_764_000_123_456),
    }
}

fn room(history: usize, queue_capacity: usize) -> Arc<Room> {
    Rooms::new(RoomLimits {
        history,
        queue_capacity,
        ..RoomLimits::default()
    })
    .get_or_create("bench")
    .unwrap()
}

/// One message published and taken by every subscriber, as a transport would.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for subscribers in [10usize, 1_000, 10_000] {
        let room = room(10_000, 1024);
        let mut subs: Vec<Subscription> = (0..subscribers).map(|_| room.subscribe(None)).collect();
        let message = draft(64);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    room.publish(&message);
                    for sub in subs.iter_mut() {
                        black_box(sub.try_next(256));
                    }
                })
            },
        );
    }
    group.finish();
}

/// Encoding one message for each wire format.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let message = draft(64);
    group.bench_function("publish_json_and_sse", |b| {
        b.iter(|| Published::new(black_box(17), "lobby", black_box(&message), 1))
    });
    let published: Vec<Arc<Published>> = (1..=100)
        .map(|id| Arc::new(Published::new(id, "lobby", &message, 1)))
        .collect();
    group.bench_function("poll_body_100", |b| {
        b.iter(|| poll_body(black_box(&published), 100, None))
    });
    group.bench_function("sse_chunk_100", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(published.iter().map(|m| m.sse.len()).sum());
            for m in &published {
                out.extend_from_slice(&m.sse);
            }
            black_box(out)
        })
    });
    // What the WebSocket fan-out builds once per run of messages and writes, as it
    // is, to every live session.
    for n in [1, 100] {
        group.bench_function(format!("ws_frames_of_a_run_of_{n}"), |b| {
            b.iter(|| lab::transport::fanout::Frames::new(black_box(&published[..n])))
        });
    }
    // What a session catching up writes per message (through tungstenite).
    group.bench_function("ws_text_frame", |b| {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let json = published[0].json.clone();
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            let text = std::str::from_utf8(&json).unwrap();
            Frame::message(
                black_box(text.as_bytes().to_vec()),
                OpCode::Data(Data::Text),
                true,
            )
            .format(&mut out)
            .unwrap();
            black_box(&out);
        })
    });
    group.finish();
}

/// A long-poll client's queue: messages pushed while it is away, then drained.
fn client_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_queue");
    for queued in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(queued as u64));
        group.bench_with_input(
            BenchmarkId::new("push_and_drain", queued),
            &queued,
            |b, &n| {
                let room = room(10_000, 1024);
                let message = draft(64);
                b.iter_batched(
                    || room.subscribe(None),
                    |mut sub| {
                        for _ in 0..n {
                            room.publish(&message);
                        }
                        let mut got = 0;
                        while got < n {
                            got += sub.try_next(1000).messages.len();
                        }
                        black_box(got)
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

/// Looking up the messages after an id in a full history.
fn history_lookup(c: &mut Criterion) {
    let room = room(10_000, 16);
    let message = draft(64);
    for _ in 0..20_000 {
        room.publish(&message);
    }
    let mut group = c.benchmark_group("history_after");
    group.bench_function("limit_1", |b| {
        let mut after = 10_000u64;
        b.iter(|| {
            after = if after >= 19_990 { 10_000 } else { after + 7 };
            black_box(room.history_after(after, 1))
        })
    });
    group.bench_function("limit_100", |b| {
        b.iter(|| black_box(room.history_after(black_box(15_000), 100)))
    });
    group.finish();
}

criterion_group!(benches, fan_out, encode, client_queue, history_lookup);
criterion_main!(benches);
