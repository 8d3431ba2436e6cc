//! Micro-benchmarks of what the load generator does per delivery: reading a poll
//! answer of 100 messages and one message on its own, as the server writes them.
//! `cargo bench --bench reading`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lab::room::{Draft, RoomLimits, Rooms};
use lab::transport::common::poll_body;

/// A short-poll answer of `n` messages with the loadgen's own texts, and one message.
fn answer(n: usize) -> (Vec<u8>, Vec<u8>) {
    let room = Rooms::new(RoomLimits::default())
        .get_or_create("loadgen-1795777152")
        .unwrap();
    let messages: Vec<_> = (0..n)
        .map(|i| {
            room.publish(&Draft {
                user: format!("u{i}"),
                text: loadgen::wire::text_with_stamp(123, 1_795_800_000_000_000, 64),
                client_ts: Some(1_795_777_152_000_000 + i as i64),
            })
        })
        .collect();
    let last = messages.last().unwrap().id;
    let one = messages[0].json.to_vec();
    (poll_body(&messages, last, None).to_vec(), one)
}

fn reading(c: &mut Criterion) {
    let (page, one) = answer(100);
    let mut g = c.benchmark_group("reading");
    g.throughput(Throughput::Elements(100));
    g.bench_function("page_of_100", |b| {
        b.iter(|| {
            let mut ids = 0;
            let end = loadgen::wire::page(black_box(&page), |m| ids += m.id.unwrap()).unwrap();
            black_box((ids, end.last_id))
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_message", |b| {
        b.iter(|| loadgen::wire::msg(black_box(&one)).unwrap().id)
    });
    g.finish();
}

criterion_group!(benches, reading);
criterion_main!(benches);
