//! One hook call across the ABI (the real P2P cdylib, loaded as the host loads it) against the same
//! call made directly on the plugin type. The hook: `timer_fired` with a token the plugin never
//! armed, so both sides do the same (tiny) work and the difference is the boundary.

use criterion::{criterion_group, criterion_main, Criterion};
use plugin_api::PluginLibrary;
use tests::sim_host::SimHost;
use std::hint::black_box;

fn hook_call(c: &mut Criterion) {
    tests::harness::build_artifacts();
    let library = PluginLibrary::open(&tests::harness::library("plugin_p2p")).expect("the P2P plugin loads");
    let mut across = library.instantiate(SimHost::default(), Some("<P2P><Enable>true</Enable></P2P>")).expect("instantiates");
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
