//! One hook call across the ABI (the real P2P cdylib, loaded as the host loads it) against the same
//! call made directly on the plugin type. The hook: `timer_fired` with a token the plugin never
//! armed, so both sides do the same (tiny) work and the difference is the boundary.

use criterion::{criterion_group, criterion_main, Criterion};
use plugin_api::{HostServices, LogLevel, PluginLibrary, SessionId};
use std::hint::black_box;

struct NoHost;

impl HostServices for NoHost {
    fn now_ms(&self) -> u64 {
        0
    }
    fn send(&self, _: SessionId, _: &str) {}
    fn serve_from_edge(&self, _: SessionId) {}
    fn close(&self, _: SessionId, _: u16, _: &str) {}
    fn set_timer(&self, _: u64, _: u64) {}
    fn log(&self, _: LogLevel, _: &str) {}
    fn count(&self, _: &str, _: i64) {}
}

fn hook_call(c: &mut Criterion) {
    tests::harness::build_artifacts();
    let library = PluginLibrary::open(&tests::harness::library("plugin_p2p")).expect("the P2P plugin loads");
    let mut across = library.instantiate(NoHost, Some("<P2P><Enable>true</Enable></P2P>")).expect("instantiates");
    c.bench_function("timer_fired across the ABI (cdylib)", |b| b.iter(|| across.timer_fired(black_box(u64::MAX)).unwrap()));

    // The plugin's `timer_fired` body (core call + draining its outputs), linked statically.
    let mut core = plugin_p2p::core::P2pCore::new(plugin_p2p::config::P2pConfig::parse("<P2P><Enable>true</Enable></P2P>").unwrap());
    c.bench_function("timer_fired direct (core, no boundary)", |b| {
        b.iter(|| {
            core.timer_fired(0, black_box(u64::MAX));
            core.drain_outputs().count()
        })
    });
}

criterion_group!(benches, hook_call);
criterion_main!(benches);
