// BENCHMARKS.md, issue 24: the host's CPU per viewer over ICE-TCP against UDP. For each transport
// in turn a fresh host, then VIEWERS pages of OvenPlayer 0.10.54 in one Chromium playing
// ws://HOST_ADDR:PORT/app/stream?transport=T (T's candidates only); once every page shows frames
// over a pair of that transport, the host's CPU (utime+stime from /proc/PID/stat) over WINDOW_S
// seconds, less its idle CPU (the same window before any viewer).
//
// Run by tests/tests/browser.rs (`benchmark_host_cpu_per_viewer_over_ice_tcp_against_udp`,
// ignored) inside its namespace. Environment: HOST_BIN, HOST_CONFIG, HOST_PORT, HOST_ADDR
// (default 192.0.2.1), VIEWERS (5), WINDOW_S (20), ROUNDS (2), CHROMIUM.
// Prints `TRANSPORT_CPU transport=T viewers=N idle_pct=.. loaded_pct=.. per_viewer_pct=..` per run.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { CHROMIUM_ARGS, DESKTOP_CHROME, log, sleep, waitFor } from './common.mjs';
import { openPlayer } from './instrument.mjs';

const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
const ADDR = env.HOST_ADDR ?? '192.0.2.1';
const VIEWERS = Number(env.VIEWERS ?? 5);
const WINDOW_S = Number(env.WINDOW_S ?? 20);
const ROUNDS = Number(env.ROUNDS ?? 2);
/** Linux's USER_HZ: /proc's CPU times are in 1/100 s. */
const TICKS_PER_S = 100;
/** After the last page shows frames, before the window: joins' keyframe bursts and DTLS done. */
const SETTLE_MS = 3000;

/** CPU seconds `pid` has used (user + system). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
}

/** The host's CPU over the window, in % of one core. */
async function windowPct(pid) {
  const before = cpuSeconds(pid);
  await sleep(WINDOW_S * 1000);
  return ((cpuSeconds(pid) - before) / WINDOW_S) * 100;
}

async function run(browser, transport) {
  const host = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], { env: { ...env, RUST_LOG: 'warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let hostLog = '';
  for (const pipe of [host.stdout, host.stderr]) pipe.on('data', (d) => { hostLog += d; });
  const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
  try {
    await waitFor('the host to serve', 20000, async () => {
      try { return (await fetch(`http://${ADDR}:${PORT}/player.js`)).ok; } catch { return false; }
    });
    const idle = await windowPct(host.pid);
    const pages = [];
    for (let i = 0; i < VIEWERS; i++) pages.push(await openPlayer(context, 'player.test', `ws://${ADDR}:${PORT}/app/stream?p2p=0&transport=${transport}`));
    for (const page of pages) {
      await waitFor(`frames over ${transport}`, 30000, async () => (await page.evaluate(() => window.__frames())) > 0);
      const pair = await waitFor('a selected pair', 5000, async () => page.evaluate(() => window.__selectedPair()));
      if (pair.protocol !== transport) throw new Error(`a page's pair is not ${transport}: ${JSON.stringify(pair)}`);
    }
    await sleep(SETTLE_MS);
    const framesBefore = await Promise.all(pages.map((p) => p.evaluate(() => window.__frames())));
    const loaded = await windowPct(host.pid);
    const framesAfter = await Promise.all(pages.map((p) => p.evaluate(() => window.__frames())));
    const fps = framesAfter.map((f, i) => (f - framesBefore[i]) / WINDOW_S);
    if (fps.some((f) => f < 10)) throw new Error(`a page fell behind: ${fps.map((f) => f.toFixed(1))} frames/s`);
    const perViewer = (loaded - idle) / VIEWERS;
    console.log(`TRANSPORT_CPU transport=${transport} viewers=${VIEWERS} idle_pct=${idle.toFixed(2)} loaded_pct=${loaded.toFixed(2)} per_viewer_pct=${perViewer.toFixed(2)} fps_min=${Math.min(...fps).toFixed(1)}`);
  } catch (e) {
    throw new Error(`${e.message}\n--- host log ---\n${hostLog}`);
  } finally {
    await context.close();
    host.kill('SIGTERM');
    await new Promise((r) => host.once('exit', r));
  }
}

async function main() {
  const browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const transport of ['udp', 'tcp']) {
        log(`round ${round + 1}: ${transport}`);
        await run(browser, transport);
      }
    }
    console.log('benchmark transport-cpu: done');
  } catch (e) {
    console.log(`benchmark transport-cpu: FAILED: ${e.message}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();
