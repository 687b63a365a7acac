//! One viewer's arrival with 100k peers in the pool (over 256 networks, each host ranked in its
//! pool and in its pool's network) (the core remembers the User-Agents it has
//! classified: these four are parsed once; the woothee parse alone is benched separately): `session_opened` (classification by
//! User-Agent) plus `offer_requested` (matching to the least-loaded host of its stream and browser
//! kind), then its departure so the pool stays the same size. Criterion gives the mean of the whole
//! cycle; a second pass times 200k single arrivals (open + match, not the departure) and prints
//! p50/p99/p99.9/max.

use criterion::{criterion_group, criterion_main, Criterion};
use plugin_api::SessionKind;
use plugin_p2p::config::P2pConfig;
use plugin_api::HostCall;
use plugin_p2p::core::{Arrival, P2pCore};
use std::hint::black_box;
use std::time::Instant;

const POOL: u32 = 100_000;
/// Ten streams, four desktop browser kinds, so the pool has 40 keys of ~2.5k hosts each.
const STREAMS: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
];

/// 256 networks (/24s): every host is also ranked within its network (locality on).
fn remote(id: u32) -> &'static str {
    static REMOTES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    &REMOTES.get_or_init(|| (0..256).map(|n| format!("10.0.{n}.7:50000")).collect())[(id % 256) as usize]
}

fn arrival(id: u32) -> Arrival<'static> {
    Arrival {
        id,
        kind: SessionKind::Play,
        stream: STREAMS[(id % 10) as usize],
        app: "app",
        stream_name: STREAMS[(id % 10) as usize],
        user_agent: USER_AGENTS[((id / 10) % 4) as usize],
        query: "",
        remote: remote(id),
    }
}

/// A core holding `POOL` playing host peers with room for clients (k = 1000).
fn full_pool() -> P2pCore {
    let config = P2pConfig::parse("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>1000</MaxClientPeersPerHostPeer><PairNewViewers>any</PairNewViewers></P2P>").unwrap();
    let mut core = P2pCore::new(config);
    // The first arrival of each (stream, browser) key is served by the edge and becomes a host;
    // the rest would become its clients, so hosts are made by opening and playing without asking.
    for id in 1..=POOL {
        core.session_opened(0, arrival(id));
        core.session_playing(0, id);
    }
    core.drain_outputs().for_each(drop);
    core
}

/// One viewer arrives and is matched (the part timed for the percentiles).
fn join(core: &mut P2pCore, id: u32) {
    core.session_opened(0, arrival(id));
    black_box(core.offer_requested(0, id));
}

/// It leaves, and its offer deadline fires as the host would fire it later: the core is back
/// where it was.
fn leave(core: &mut P2pCore, id: u32) {
    core.session_closed(0, id);
    let timers: Vec<u64> = core.drain_outputs().filter_map(|o| if let HostCall::SetTimer { token, .. } = o { Some(token) } else { None }).collect();
    for token in timers {
        core.timer_fired(0, token);
    }
    core.drain_outputs().for_each(drop);
}

fn classify_and_match(c: &mut Criterion) {
    let mut core = full_pool();
    let mut next = POOL + 1;
    c.bench_function("arrive (classify + match) and leave, 100k hosts in the pool", |b| {
        b.iter(|| {
            join(&mut core, next);
            leave(&mut core, next);
            next += 1;
        })
    });
    c.bench_function("classify alone, woothee parse (a User-Agent not seen before)", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            black_box(plugin_p2p::classify::classify(black_box(USER_AGENTS[i % 4])))
        })
    });
    c.bench_function("classify alone, remembered User-Agent", |b| {
        let mut classifier = plugin_p2p::classify::Classifier::default();
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            black_box(classifier.classify(black_box(USER_AGENTS[i % 4])))
        })
    });

    let mut samples: Vec<u64> = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let started = Instant::now();
        join(&mut core, next);
        samples.push(started.elapsed().as_nanos() as u64);
        leave(&mut core, next);
        next += 1;
    }
    samples.sort_unstable();
    let q = |f: f64| samples[((samples.len() - 1) as f64 * f) as usize];
    println!(
        "arrival (session_opened + offer_requested), 100k hosts in the pool, 200k single arrivals: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(0.999),
        samples[samples.len() - 1]
    );
}

criterion_group!(benches, classify_and_match);
criterion_main!(benches);
