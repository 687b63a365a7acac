// A real cluster in one private network namespace: an origin fed over RTP by ffmpeg, two edges
// that pull from it over WebRTC (each with the P2P plugin, k = 2), HAProxy in front of the edges'
// signalling, and OvenPlayer 0.10.38 viewers in real headless Chromium reaching the edges through
// HAProxy. P2P pairs form within each edge; one edge is killed (SIGKILL) and its viewers reconnect
// through HAProxy to the other: the gap is measured per viewer (RECONNECT_GAP_MS).
//
// Run by tests/tests/cluster.rs inside a fresh network namespace (192.0.2.1 on a veth pair):
//   node cluster.mjs
// Environment: HOST_BIN (the host), CLUSTER (JSON written by the test: the configs and ports, see
// `cluster` below), HOST_ADDR (default 192.0.2.1), CHROMIUM, BROWSER_ECHO=1 to echo the pages'
// consoles, HOST_ECHO=1 to print every process's log at the end. Exits non-zero with the reason
// when a check fails; prints `cluster: passed` when all hold.
//
// OvenPlayer 0.10.38 does not reconnect by itself once a session it played has dropped: its
// WebRTC loader turns the WebSocket's close into error 511 ("unexpected disconnect"), pauses and
// stops (WebRTCLoader.js `ws.onclose`; `webrtcConfig.timeoutMaxRetry` only retries a first
// connection that never came up, `autoFallback` only moves to the next source in the list). The
// test page does what a site does: on an error it loads the same source again (`player.load`).

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS, DESKTOP_CHROME, LINUX_CHROME, TIME_FRAMES, log, sleep, started, waitFor } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const ADDR = env.HOST_ADDR ?? '192.0.2.1';
/**
 * `{origin: {name, config, port, api, video_port, audio_port, clip},
 *   edges: [{name, config, port, api}, ...], balancer: {config, port, stats}}`
 */
const cluster = JSON.parse(env.CLUSTER);
/** Where the viewers connect: the balancer. */
const STREAM_URL = `ws://${ADDR}:${cluster.balancer.port}/app/stream`;

/** GET `http://host:port/path`: `{status, body}`. */
async function get(host, port, urlPath) {
  const response = await fetch(`http://${host}:${port}${urlPath}`);
  return { status: response.status, body: await response.text() };
}

// ---------------------------------------------------------------------------------------------
// The processes: origin, ffmpeg, edges, haproxy; each one's output kept, each killed by its PID

const processes = [];

class Proc {
  constructor(name, command, args, extraEnv = {}) {
    this.name = name;
    this.log = '';
    this.child = spawn(command, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.on('exit', resolve));
    for (const pipe of [this.child.stdout, this.child.stderr]) {
      pipe.on('data', (d) => {
        for (const line of String(d).split('\n').filter((l) => l !== '')) this.log += `[${((Date.now() - started) / 1000).toFixed(2)} s] ${line}\n`;
      });
    }
    processes.push(this);
    log(`${name} started (pid ${this.child.pid}): ${path.basename(command)} ${args.join(' ')}`);
  }
  /** Fails if the process has exited. */
  alive() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`${this.name} exited:\n${this.log}`);
  }
  /** Waits until the log shows `line`; fails if the process exits first. */
  async logged(line, ms = 20000) {
    await waitFor(`${this.name} to log "${line}"`, ms, () => this.alive() ?? this.log.includes(line));
  }
  /** Sends `signal` to this process (by its PID) and waits until it is gone. */
  async kill(signal = 'SIGKILL') {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      process.kill(this.child.pid, signal);
      await this.exited;
    }
  }
}

/** A host (`host --config`), ready once it logs that it waits for viewers. */
class Host extends Proc {
  constructor(spec) {
    super(spec.name, env.HOST_BIN, ['--config', spec.config], { RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' });
    this.spec = spec;
  }
  async ready() { await this.logged('waiting for viewers'); }
  /** `/stats` on the signalling port, from loopback (where it answers without a token). */
  async stats() { return JSON.parse((await get('127.0.0.1', this.spec.port, '/stats')).body); }
  /** Session ids live at this host. */
  async sessionIds() { return (await this.stats()).sessions.map((s) => s.id); }
  async egress(id) { return (await this.stats()).sessions.find((s) => s.id === id)?.egress_bytes; }
  /** The value of the `/metrics` sample `series` (e.g. `viewers{...}`) on the API port, or 0. */
  async metric(series) {
    const { body } = await get('127.0.0.1', this.spec.api, '/metrics');
    const line = body.split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }
}

/** HAProxy in the foreground (`-db`), its log on stdout (the config says `log stdout`). */
class Balancer extends Proc {
  constructor(spec) {
    super('haproxy', env.HAPROXY ?? '/usr/sbin/haproxy', ['-db', '-f', spec.config]);
    this.spec = spec;
  }
  /** Each server's health as HAProxy's stats page (CSV) says: `{name: 'UP' | 'DOWN' | ...}`. */
  async servers() {
    const { body } = await get('127.0.0.1', this.spec.stats, '/;csv');
    const [header, ...rows] = body.replace(/^# /, '').trim().split('\n').map((l) => l.split(','));
    const [px, sv, status] = ['pxname', 'svname', 'status'].map((c) => header.indexOf(c));
    return Object.fromEntries(rows.filter((r) => r[px] === 'edges' && !['FRONTEND', 'BACKEND'].includes(r[sv])).map((r) => [r[sv], r[status]]));
  }
}

// ---------------------------------------------------------------------------------------------
// Viewers: OvenPlayer 0.10.38 in a browser context each, instrumented without touching the player

/**
 * Records every signalling message the page receives and when, across reconnections: the
 * player's WebSockets are hooked as they are made. (TIME_FRAMES, after it, timestamps every
 * presented video frame in `window.__frameTimes`, hooking the player's video elements likewise.)
 */
const INSTRUMENT = () => {
  window.__signals = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try {
          const m = JSON.parse(e.data);
          window.__signals.push({ at: Date.now(), command: m.command, id: m.id, peer_id: m.peer_id, code: m.code, error: m.error });
        } catch { /* not JSON: the player reports it */ }
      });
    }
  };
};

/**
 * OvenPlayer 0.10.38 playing `wsUrl`, reconnecting as a site would: on an error (511 when the
 * WebSocket drops) it loads the same source again, at once the first time (HAProxy's retries send
 * a connection the dead edge refuses to a live one), then backing off from 1 s to 10 s while no
 * attempt plays.
 */
const ovenplayerPage = (wsUrl) => `<!doctype html><html><body>
<div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>
  window.__p2pMode = [];
  window.__errors = [];
  window.__reloads = [];
  const sources = [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }];
  const player = OvenPlayer.create('player', { autoStart: true, mute: true, sources });
  player.on('p2pMode', (on) => window.__p2pMode.push({ at: Date.now(), on }));
  let failures = 0;
  player.on('stateChanged', (e) => { if (e.newstate === 'playing') failures = 0; });
  player.on('error', (e) => {
    window.__errors.push({ at: Date.now(), code: e.code, message: e.message });
    // OvenPlayer 0.10.38 does not reconnect by itself: load the source again.
    const delay = failures === 0 ? 0 : Math.min(10000, 500 * 2 ** failures);
    failures += 1;
    setTimeout(() => { window.__reloads.push(Date.now()); player.load(sources); }, delay);
  });
</script></body></html>`;

class Viewer {
  static async open(browser, name, userAgent) {
    const context = await browser.newContext({ userAgent });
    const page = await context.newPage();
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${name} page error: ${e.message}`));
    await page.addInitScript(INSTRUMENT);
    await page.addInitScript(TIME_FRAMES);
    const script = readFileSync(path.join(here, 'node_modules', 'ovenplayer-0.10.38', 'dist', 'ovenplayer.js'));
    await page.route('http://player.test/**', (route) => {
      const url = new URL(route.request().url());
      if (url.pathname === '/ovenplayer.js') return route.fulfill({ body: script, contentType: 'text/javascript' });
      return route.fulfill({ body: ovenplayerPage(STREAM_URL), contentType: 'text/html' });
    });
    await page.goto('http://player.test/');
    log(`${name} opened (OvenPlayer 0.10.38, ${userAgent === DESKTOP_CHROME ? 'Windows Chrome: may host' : 'Linux Chrome: client only'})`);
    return Object.assign(new Viewer(), { name, context, page, userAgent });
  }
  signals() { return this.page.evaluate(() => window.__signals); }
  frameTimes() { return this.page.evaluate(() => window.__frameTimes); }
  errors() { return this.page.evaluate(() => window.__errors); }
  reloads() { return this.page.evaluate(() => window.__reloads); }
  /** `p2pMode` events, as booleans, since `since`. */
  async p2pMode(since = 0) { return (await this.page.evaluate(() => window.__p2pMode)).filter((e) => e.at >= since).map((e) => e.on); }
  /** The first offer this viewer received at or after `since` (ms since the epoch). */
  async offer(since = 0, ms = 20000) {
    return waitFor(`${this.name}'s offer`, ms, async () => (await this.signals()).find((s) => s.command === 'offer' && s.at >= since));
  }
  /** Waits until `count` frames were presented at or after `since`; returns when the first was. */
  async playing(since = 0, count = 60, ms = 20000) {
    const times = await waitFor(`${this.name} to present ${count} frames`, ms, async () => {
      const t = (await this.frameTimes()).filter((at) => at >= since);
      return t.length >= count ? t : null;
    });
    return times[0];
  }
}

// ---------------------------------------------------------------------------------------------
// The cluster test

/** The edge at which session `id` lives, among `edges`. */
async function edgeOf(edges, id) {
  for (const edge of edges) if ((await edge.sessionIds()).includes(id)) return edge;
  return null;
}

const P2P_VIEWERS = 'viewers{app="app",stream="stream",delivery="p2p"}';
const EDGE_VIEWERS = 'viewers{app="app",stream="stream",delivery="edge"}';

async function run(browser) {
  // The origin, its RTP source, the two edges, the balancer.
  const origin = new Host(cluster.origin);
  await origin.ready();
  new Proc('ffmpeg', 'ffmpeg', ['-v', 'error', '-re', '-stream_loop', '-1', '-i', cluster.origin.clip,
    '-map', '0:v', '-c', 'copy', '-f', 'rtp', `rtp://127.0.0.1:${cluster.origin.video_port}`,
    '-map', '0:a', '-c', 'copy', '-f', 'rtp', `rtp://127.0.0.1:${cluster.origin.audio_port}`]);
  await origin.logged('source is live', 10000);
  const edges = cluster.edges.map((spec) => new Host(spec));
  await Promise.all(edges.map((e) => e.ready()));
  const balancer = new Balancer(cluster.balancer);
  await waitFor('HAProxy to see both edges UP', 10000, async () => {
    balancer.alive();
    const servers = await balancer.servers().catch(() => ({}));
    return edges.every((e) => servers[e.name] === 'UP') ? servers : null;
  });
  log(`HAProxy: ${JSON.stringify(await balancer.servers())}; origin, edges and HAProxy serve; nothing pulled yet (origin sessions: ${(await origin.stats()).session_count})`);
  assert.equal((await origin.stats()).session_count, 0, 'no edge pulls before a viewer comes');

  // Through the balancer: the edges' page answers; /stats does not (the PROXY header names the
  // viewer's address, not loopback).
  assert.equal((await get(ADDR, cluster.balancer.port, '/stats')).status, 403, 'the balancer keeps /stats to itself');

  // Two host-capable viewers first (a host must play before it may relay), then four clients,
  // each once the one before got its offer, so that round robin alternates the edges.
  const viewers = [];
  for (const [name, userAgent] of [['W1', DESKTOP_CHROME], ['W2', DESKTOP_CHROME]]) {
    const v = await Viewer.open(browser, name, userAgent);
    await v.playing(0, 30, 30000);
    viewers.push(v);
  }
  for (const name of ['L1', 'L2', 'L3', 'L4']) {
    const v = await Viewer.open(browser, name, LINUX_CHROME);
    await v.offer();
    viewers.push(v);
  }
  await Promise.all(viewers.map((v) => v.playing(0, 60, 30000)));

  // Where each viewer is: its session id (the offer's id) at one of the edges.
  const placed = new Map(); // edge -> viewers
  for (const v of viewers) {
    const offer = await v.offer();
    v.id = offer.id;
    v.peer = offer.peer_id;
    v.edge = await edgeOf(edges, v.id);
    assert.ok(v.edge, `${v.name}'s session ${v.id} lives at an edge`);
    placed.set(v.edge, [...(placed.get(v.edge) ?? []), v]);
  }
  await sleep(2000); // every P2P link up and reported
  for (const edge of edges) {
    const mine = placed.get(edge) ?? [];
    const stats = await edge.stats();
    const rows = [];
    for (const v of mine) {
      const from = v.peer === 0 ? 'the edge' : viewers.find((h) => h.id === v.peer)?.name ?? `unknown peer ${v.peer}`;
      rows.push(`${v.name} (${v.id}) from ${from}, p2pMode ${JSON.stringify(await v.p2pMode())}, edge egress ${await edge.egress(v.id)}`);
    }
    log(`${edge.name}: ${stats.session_count} sessions; ${rows.join('; ')}; /metrics p2p ${await edge.metric(P2P_VIEWERS)}, edge ${await edge.metric(EDGE_VIEWERS)}`);
  }
  for (const edge of edges) {
    const mine = placed.get(edge) ?? [];
    assert.ok(mine.length >= 3, `${edge.name} got viewers through the balancer: ${mine.map((v) => v.name)}`);
    const clients = mine.filter((v) => v.peer !== 0);
    assert.ok(clients.length >= 1, `P2P pairs form at ${edge.name}`);
    for (const c of clients) {
      const host = viewers.find((h) => h.id === c.peer);
      assert.ok(host, `${c.name}'s host peer ${c.peer} is one of the viewers`);
      assert.equal(host.edge, edge, `${c.name}'s host ${host.name} is on ${c.name}'s edge (${edge.name})`);
      assert.deepEqual(await c.p2pMode(), [true], `${c.name}: p2pMode true`);
      assert.equal(await edge.egress(c.id), 0, `${edge.name} sends nothing to its P2P client ${c.name}`);
    }
    assert.equal(await edge.metric(P2P_VIEWERS), clients.length, `${edge.name}'s /metrics counts its P2P viewers`);
  }
  const originStats = await origin.stats();
  assert.equal(originStats.session_count, 2, `one pull per edge at the origin: ${JSON.stringify(originStats.sessions)}`);
  assert.equal(await origin.metric('pulling_edges{app="app",stream="stream"}'), 2, 'the origin counts both as edges (their query says edge=NAME)');
  assert.equal(await origin.metric(EDGE_VIEWERS), 0, 'and not as viewers');
  for (const edge of edges) assert.ok(edge.log.includes(`edge=${edge.name} `), `${edge.name} pulls as edge=${edge.name}`);
  log('origin: 2 sessions, pulling_edges 2 (?p2p=0&edge=edge-a, ?p2p=0&edge=edge-b)');

  // Kill the edge W1 plays from. Its viewers' WebSockets close; OvenPlayer reports 511 and the
  // page loads the source again: HAProxy sends the new connection to the surviving edge.
  const doomed = viewers[0].edge;
  const survivor = edges.find((e) => e !== doomed);
  const moving = placed.get(doomed);
  const staying = placed.get(survivor);
  await sleep(1000);
  const killedAt = Date.now();
  await doomed.kill('SIGKILL');
  log(`${doomed.name} killed (SIGKILL, pid ${doomed.child.pid}); its viewers: ${moving.map((v) => v.name).join(' ')}`);
  // Watched beside the viewers and awaited after them: a failure is kept (not an unhandled
  // rejection, which would end node before `finally` stops the hosts and haproxy) and rethrown
  // where it is awaited.
  const settled = (promise) => promise.then((at) => () => at, (e) => () => { throw e; });
  const originDroppedAt = settled(waitFor('the origin to drop the killed edge\'s pull', 10000, async () => (await origin.stats()).session_count === 1 && Date.now()));
  const downAt = settled(waitFor(`HAProxy to mark ${doomed.name} DOWN`, 10000, async () => ((await balancer.servers())[doomed.name] ?? '').startsWith('DOWN') && Date.now()));

  const gaps = await Promise.all(moving.map(async (v) => {
    const error = await waitFor(`${v.name}'s OvenPlayer error`, 10000, async () => (await v.errors()).find((e) => e.at >= killedAt));
    const offer = await v.offer(killedAt, 20000);
    const firstFrame = await v.playing(offer.at, 60, 30000);
    const lastFrame = Math.max(...(await v.frameTimes()).filter((at) => at < offer.at));
    const edge = await edgeOf(edges, offer.id);
    assert.equal(edge, survivor, `${v.name}'s new session ${offer.id} is at ${survivor.name}`);
    const from = offer.peer_id === 0 ? survivor.name : viewers.find((h) => h.id === offer.peer_id)?.name ?? offer.peer_id;
    log(`${v.name}: last frame at +${lastFrame - killedAt} ms, error ${error.code} at +${error.at - killedAt} ms, reloaded, offer from ${from} at +${offer.at - killedAt} ms, first frame at +${firstFrame - killedAt} ms`);
    assert.equal(error.code, 511, `${v.name}: OvenPlayer reports the drop as 511`);
    // One reload, or two when the first reconnection was matched to a host peer whose offer did
    // not come before the offer deadline (the edge then serves the second).
    const reloads = (await v.reloads()).filter((at) => at >= killedAt).length;
    assert.ok(reloads >= 1 && reloads <= 2, `${v.name}: ${reloads} reloads (one, at most two, expected)`);
    return { v, gap: firstFrame - killedAt, freeze: firstFrame - lastFrame, error: error.at - killedAt, offer: offer.at - killedAt };
  }));
  log(`HAProxy marked ${doomed.name} DOWN at +${(await downAt)() - killedAt} ms`);

  // The surviving edge's viewers never noticed.
  for (const v of staying) {
    assert.deepEqual(await v.errors(), [], `${v.name} (on ${survivor.name}) had no error`);
    await v.playing(Date.now(), 30);
  }
  log(`origin: 1 session (${survivor.name}'s pull) at +${(await originDroppedAt)() - killedAt} ms`);
  await sleep(2000);
  const stats = await survivor.stats();
  assert.equal(stats.session_count, viewers.length, `${survivor.name} serves all ${viewers.length} viewers`);
  const after = [];
  for (const v of moving) {
    const offers = (await v.signals()).filter((s) => s.command === 'offer' && s.at >= killedAt);
    const last = offers[offers.length - 1];
    after.push(`${v.name} from ${last.peer_id === 0 ? survivor.name : viewers.find((h) => h.id === last.peer_id)?.name}`);
  }
  log(`${survivor.name}: ${stats.session_count} sessions; /metrics p2p ${await survivor.metric(P2P_VIEWERS)}, edge ${await survivor.metric(EDGE_VIEWERS)}; the moved viewers: ${after.join(', ')}`);
  log(`RECONNECT_GAP_MS ${gaps.map((g) => `${g.v.name}=${g.gap}`).join(' ')} (SIGKILL of ${doomed.name} -> first frame from ${survivor.name})`);
  log(`FREEZE_MS ${gaps.map((g) => `${g.v.name}=${g.freeze}`).join(' ')} (last frame before -> first frame after)`);
  log(`ERROR_MS ${gaps.map((g) => `${g.v.name}=${g.error}`).join(' ')}; OFFER_MS ${gaps.map((g) => `${g.v.name}=${g.offer}`).join(' ')}`);
}

let browser;
let failed = false;
try {
  browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  log(`cluster: Chromium ${browser.version()}`);
  await run(browser);
  log('cluster: passed');
} catch (e) {
  failed = true;
  console.error(`cluster FAILED: ${e.stack ?? e}`);
} finally {
  await browser?.close().catch(() => {});
  for (const p of [...processes].reverse()) await p.kill('SIGKILL');
  if (failed || env.HOST_ECHO) for (const p of processes) console.error(`--- ${p.name} log ---\n${p.log}`);
  process.exit(failed ? 1 : 0);
}
