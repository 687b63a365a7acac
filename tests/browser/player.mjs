// The P2P player library (host/assets/player.js, served at /player.js) in real headless Chromium
// against the real host: embedded in a page of another origin (http://site.test, as a site would,
// importing http://HOST:PORT/player.js across origins), it plays, relays, comes back after the
// host is killed and restarted, and leaves a failed P2P link for the edge. Plus the two
// benchmarks of BENCHMARKS.md ("The P2P player (issue 23)").
//
// Run by tests/tests/browser.rs inside a fresh network namespace (192.0.2.1 on a veth pair):
//   node player.mjs <edge|relay-two|restart|failed-link|bench-first-frame|bench-relay-cpu>
// Environment: HOST_BIN, HOST_CONFIG, HOST_PORT, API_PORT (the host's /metrics, when the config
// has one), CHROMIUM, RUNS (bench-first-frame: runs per player, default 20), WINDOW_S
// (bench-relay-cpu: seconds per measurement, default 20), BROWSER_ECHO=1 to echo the pages'
// consoles. Prints `scenario NAME: passed`, or exits non-zero with the reason.

import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CHROMIUM_ARGS, DESKTOP_CHROME, LINUX_CHROME, RECORD_MESSAGES, TIME_FRAMES, launchChromium, log, runScenario, sleep, waitFor,
} from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const ADDR = '192.0.2.1';
const PORT = env.HOST_PORT ?? '3333';
const HOST_URL = `http://${ADDR}:${PORT}`;
const STREAM_URL = `ws://${ADDR}:${PORT}/app/stream`;
/** The embedding site: another origin than the host's (playwright answers for it). */
const SITE = 'http://site.test';

// ---------------------------------------------------------------------------------------------
// The host process (restartable on the same port)

class Host {
  constructor() { this.start(); }
  start() {
    this.log = '';
    this.child = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], {
      env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const pipe of [this.child.stdout, this.child.stderr]) pipe.on('data', (d) => { this.log += d; });
  }
  /** Resolves (with the time) once the host says it serves. */
  async ready() {
    await waitFor('the host to serve', 20000, () => {
      if (this.child.exitCode !== null) throw new Error(`host exited:\n${this.log}`);
      return this.log.includes('waiting for viewers');
    });
    return Date.now();
  }
  /** SIGKILL (no goodbye to anyone), waits until the process is gone. */
  async kill() {
    const child = this.child;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }
  async stats() {
    return (await fetch(`http://127.0.0.1:${PORT}/stats`)).json();
  }
  async metric(name) {
    return (await this.stats()).metrics[name] ?? 0;
  }
  /** A value of the API's Prometheus `/metrics` (API_PORT): the first series named `name` whose labels include `labels`. */
  async prometheus(name, labels) {
    const text = await (await fetch(`http://127.0.0.1:${env.API_PORT}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
    return line ? Number(line.trim().split(/\s+/).pop()) : null;
  }
  stop() { this.child.kill('SIGKILL'); }
}

// ---------------------------------------------------------------------------------------------
// Pages

/**
 * Instrumentation, before any page script, after RECORD_MESSAGES (every signalling message sent
 * and received) and TIME_FRAMES (when each video frame was presented, `requestVideoFrameCallback`,
 * re-armed for every frame; new videos looked for every 10 ms): every RTCPeerConnection made (with
 * its configuration).
 */
const INSTRUMENT = () => {
  window.__pcs = [];
  const NativePc = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePc {
    constructor(configuration = {}) {
      super(configuration);
      window.__pcs.push({ pc: this, configuration: JSON.parse(JSON.stringify(configuration)) });
    }
  };
};

/** Installs the instrumentation in `page`. */
async function instrument(page) {
  await page.addInitScript(RECORD_MESSAGES);
  await page.addInitScript(TIME_FRAMES, 10);
  await page.addInitScript(INSTRUMENT);
}

/** A site embedding the player as README.md shows: a <video> and a few lines of JS. */
const embeddingPage = (options) => `<!doctype html><html><body>
<video id="video" muted playsinline></video>
<script type="module">
  import { P2PPlayer } from '${HOST_URL}/player.js';
  window.__events = [];
  window.__loadedAt = Date.now();
  const player = P2PPlayer.create(document.getElementById('video'), ${JSON.stringify(options)});
  for (const name of ['state', 'source', 'relaying']) player.on(name, (...args) => window.__events.push({ at: Date.now(), name, args }));
  window.player = player;
</script></body></html>`;

/** OvenPlayer 0.10.54 on the same stream, for the first-frame comparison. */
const ovenplayerPage = () => `<!doctype html><html><body>
<div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>
  OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(STREAM_URL)} }] });
</script></body></html>`;

class Viewer {
  /** A page of the site embedding the player with `options` (url defaults to the stream). */
  static async open(browser, name, { userAgent = DESKTOP_CHROME, options = {} } = {}) {
    const context = await browser.newContext({ userAgent });
    const page = await context.newPage();
    const viewer = Object.assign(new Viewer(), { name, context, page, navigations: 0 });
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${name} page error: ${e.message}`));
    page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) viewer.navigations += 1; });
    await instrument(page);
    await page.route(`${SITE}/**`, (route) => route.fulfill({ body: embeddingPage({ url: STREAM_URL, ...options }), contentType: 'text/html' }));
    await page.goto(`${SITE}/`);
    log(`${name} opened (${userAgent === LINUX_CHROME ? 'Linux Chrome' : 'Windows Chrome'})`);
    return viewer;
  }
  events(name) { return this.page.evaluate((n) => window.__events.filter((e) => e.name === n), name); }
  sent() { return this.page.evaluate(() => window.__sent); }
  received() { return this.page.evaluate(() => window.__received); }
  frameTimes() { return this.page.evaluate(() => window.__frameTimes); }
  source() { return this.page.evaluate(() => window.player.source); }
  sessionId() { return this.page.evaluate(() => window.player.sessionId); }
  /** Video frames decoded so far on the player's receiving connection (0 without one). */
  framesDecoded() {
    return this.page.evaluate(async () => {
      const pc = window.player.connection;
      if (!pc) return 0;
      const video = [...(await pc.getStats()).values()].find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
      return video?.framesDecoded ?? 0;
    });
  }
  /** Waits until `count` more frames are decoded on the receiving connection. */
  async decodes(count = 60, ms = 15000) {
    const from = await this.framesDecoded();
    await waitFor(`${this.name} to decode ${count} frames on its connection (from ${from})`, ms, async () => (await this.framesDecoded()) >= from + count);
  }
  /** Waits until the player's `source` is `from` (and `peerId`, when given). */
  async plays(from, peerId, ms = 15000) {
    await waitFor(`${this.name} to play from ${from} ${peerId ?? ''}`, ms, async () => {
      const s = await this.source();
      return s.from === from && (peerId === undefined || s.peerId === peerId);
    });
    await waitFor(`${this.name}'s state to be playing`, ms, () => this.page.evaluate(() => window.player.state === 'playing'));
  }
  /** The first frame presented after `since`. */
  async firstFrameAfter(since, ms = 15000) {
    return waitFor(`${this.name}'s first frame after +${since - Date.now()} ms`, ms, async () => (await this.frameTimes()).find((t) => t > since));
  }
  async close() { await this.context.close(); log(`${this.name} closed its page`); }
}

/** The RTCPeerConnections a page made: their configurations, and whether each offered (a relay). */
function connectionsOf(viewer) {
  return viewer.page.evaluate(() => window.__pcs.map(({ pc, configuration }) => ({
    configuration, relay: pc.localDescription?.type === 'offer', state: pc.connectionState,
  })));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];

// ---------------------------------------------------------------------------------------------
// Scenarios

const scenarios = {
  /**
   * Issue 24: in a namespace whose firewall drops all UDP, the player plays from the edge over
   * ICE-TCP: the edge's offer carries its passive TCP candidate, the player gives it to Chromium
   * as it is, the selected pair is TCP, frames are decoded.
   */
  async 'ice-tcp'(host, browser) {
    const a = await Viewer.open(browser, 'A');
    await a.plays('edge', 0, 30000);
    await a.decodes(60, 20000);
    const offer = (await a.received()).find((m) => m.command === 'offer');
    const tcp = (offer.candidates ?? []).map((c) => c.candidate).filter((c) => / tcp /.test(c));
    assert.ok(tcp.length > 0 && tcp.every((c) => c.endsWith('tcptype passive')), `a passive TCP candidate offered: ${JSON.stringify(offer.candidates)}`);
    const protocol = await a.page.evaluate(async () => {
      const stats = [...(await window.player.connection.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport');
      const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId) ?? stats.find((s) => s.type === 'candidate-pair' && s.nominated);
      return stats.find((s) => s.id === pair?.localCandidateId)?.protocol;
    });
    assert.equal(protocol, 'tcp', 'the selected pair is TCP');
    const [first] = await a.frameTimes();
    log(`A: over ICE-TCP, first frame ${first - (await a.page.evaluate(() => window.__loadedAt))} ms after its script ran`);
  },

  /**
   * A site's page (another origin) imports /player.js from the host and plays from the edge:
   * `source` edge, state playing, frames decoded on its connection; the module is served as
   * text/javascript with CORS.
   */
  async edge(host, browser) {
    const response = await fetch(`${HOST_URL}/player.js`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/javascript/, 'served as JavaScript');
    assert.equal(response.headers.get('access-control-allow-origin'), '*', 'importable from any site');
    assert.match(await response.text(), /export class P2PPlayer/);

    const a = await Viewer.open(browser, 'A');
    await a.plays('edge', 0);
    await a.decodes(60);
    const [first] = await a.frameTimes();
    const loadedAt = await a.page.evaluate(() => window.__loadedAt);
    const states = (await a.events('state')).map((e) => e.args[0]);
    assert.deepEqual(states.slice(0, 1), ['loading'], 'it says loading first');
    assert.ok(states.includes('playing'), `it says playing (${states.join(', ')})`);
    assert.deepEqual((await a.events('source')).map((e) => e.args[0]), [{ from: 'edge', peerId: 0 }], 'one source: the edge');
    const offer = (await a.received()).find((m) => m.command === 'offer');
    const answer = (await a.sent()).find((m) => m.command === 'answer');
    assert.deepEqual([answer.id, answer.peer_id, answer.link_reports], [offer.id, 0, undefined], 'answers the edge, no link reports for it');
    log(`A: first frame ${first - loadedAt} ms after its script ran; states ${states.join(' -> ')}; offer p2p_ice_servers ${JSON.stringify(offer.p2p_ice_servers)}`);
  },

  /**
   * k = 2, three pages with a desktop Windows User-Agent: A plays from the edge, B and C play from
   * A (frames decoded on their connections to A), A's player says it relays to 2, the host counts
   * 2 P2P viewers (/metrics, /stats), and the edge sends B and C nothing.
   */
  async 'relay-two'(host, browser) {
    const a = await Viewer.open(browser, 'A');
    await a.plays('edge', 0);
    await a.decodes(30);
    const aId = await a.sessionId();
    const clients = [await Viewer.open(browser, 'B'), await Viewer.open(browser, 'C')];
    for (const v of clients) {
      await v.plays('peer', aId);
      await v.decodes(60);
    }
    await waitFor("A's player to say it relays to 2", 10000, async () => (await a.events('relaying')).at(-1)?.args[0] === 2);
    const ids = await Promise.all(clients.map((v) => v.sessionId()));
    assert.deepEqual((await a.page.evaluate(() => window.player.relayingTo)).sort(), [...ids].sort(), 'A relays to B and C');
    const aSent = await a.sent();
    for (const id of ids) {
      assert.ok(aSent.some((m) => m.command === 'offer_p2p' && m.id === aId && m.peer_id === id), `A sent offer_p2p to ${id}`);
      assert.ok(aSent.some((m) => m.command === 'candidate_p2p' && m.id === aId && m.peer_id === id), `A trickled candidate_p2p to ${id}`);
    }
    // A's relay connections have the STUN its edge offer announced (never relay-only); its edge
    // connection has none (the STUN is at the edge's own address, see player.js).
    const aConnections = await connectionsOf(a);
    const announced = (await a.received()).find((m) => m.command === 'offer')?.p2p_ice_servers;
    log(`A's connections: ${JSON.stringify(aConnections)}; announced ${JSON.stringify(announced)}`);
    const relays = aConnections.filter((c) => c.relay);
    assert.equal(relays.length, 2, 'A made two relay connections');
    for (const c of aConnections) assert.notEqual(c.configuration.iceTransportPolicy, 'relay', 'never relay-only');
    if (announced) for (const c of relays) assert.deepEqual(c.configuration.iceServers, announced, "A's relays have the server's STUN");

    const p2pViewers = env.API_PORT
      ? await waitFor('/metrics to count 2 P2P viewers', 10000, async () => ((await host.prometheus('viewers', 'delivery="p2p"')) === 2 ? 2 : null))
      : null;
    const stats = await host.stats();
    const egress = (id) => stats.sessions.find((s) => s.id === id)?.egress_bytes;
    await sleep(2000);
    const later = await host.stats();
    for (const [i, v] of clients.entries()) {
      const grew = later.sessions.find((s) => s.id === ids[i]).egress_bytes - egress(ids[i]);
      assert.equal(grew, 0, `the edge sends ${v.name} nothing`);
      await v.decodes(30);
    }
    const reports = clients.map(async (v) => (await v.sent()).filter((m) => m.command === 'p2p_link_state').map((m) => m.state));
    log(`/metrics viewers{delivery="p2p"} ${p2pViewers}; B's and C's link reports: ${JSON.stringify(await Promise.all(reports))}; links confirmed ${await host.metric('p2p.links_confirmed_total')}`);
    log(`RELAYING 2 (A's relaying events: ${(await a.events('relaying')).map((e) => e.args[0]).join(' ')})`);
  },

  /**
   * The host is SIGKILLed and started again on the same port, three times: each time the page
   * plays again (a new session, frames presented) without a reload, within 3 s of the host serving
   * again. Logs PLAYS_AGAIN_MS (host serving -> first frame) and from the kill.
   */
  async restart(host, browser) {
    const a = await Viewer.open(browser, 'A');
    await a.plays('edge', 0);
    await a.decodes(30);
    const [fromReady, fromKill] = [[], []];
    for (let round = 1; round <= 3; round += 1) {
      const before = await a.sessionId();
      const killedAt = Date.now();
      await host.kill();
      await sleep(200); // the page notices; a restart is rarely instant
      host.start();
      const readyAt = await host.ready();
      const frameAt = await a.firstFrameAfter(readyAt, 10000);
      await a.plays('edge', 0);
      await a.decodes(30);
      const after = await a.sessionId();
      assert.notEqual(after, before, 'a new session');
      fromReady.push(frameAt - readyAt);
      fromKill.push(frameAt - killedAt);
      log(`round ${round}: killed, serving again after ${readyAt - killedAt} ms, first frame ${frameAt - readyAt} ms later (session ${before} -> ${after})`);
    }
    assert.equal(a.navigations, 1, 'the page was never reloaded');
    const reasons = (await a.events('state')).filter((e) => e.args[0] === 'loading').map((e) => e.args[1]);
    log(`A's loading reasons: ${reasons.join(' | ')}`);
    log(`PLAYS_AGAIN_MS ${fromReady.join(' ')} (host serving again -> first frame); from the kill ${fromKill.join(' ')}`);
    for (const ms of fromReady) assert.ok(ms < 3000, `plays again within 3 s of the host serving (${ms} ms)`);
  },

  /**
   * A P2P link that cannot form (the namespace's firewall drops UDP off the ICE ports: every
   * player-to-player path). B (Linux Chrome: never a host) first plays from the edge, so it has
   * seen the server announce link reports; A (Windows) becomes a host; B starts over (stop(),
   * play()), is paired with A, answers with link_reports, cannot connect, reports `failed` and
   * asks again: it plays from the edge within 1 s of its report. Logs FALLBACK_MS.
   */
  async 'failed-link'(host, browser) {
    const b = await Viewer.open(browser, 'B', { userAgent: LINUX_CHROME });
    await b.plays('edge', 0);
    const a = await Viewer.open(browser, 'A');
    await a.plays('edge', 0);
    await a.decodes(30);
    await sleep(500); // A's edge connection up: the server takes it as a host
    const aId = await a.sessionId();

    const restartedAt = Date.now();
    await b.page.evaluate(() => { window.player.stop(); window.player.play(); });
    const answer = await waitFor("B's answer to A", 10000, async () => (await b.sent()).find((m) => m.command === 'answer' && m.peer_id === aId && m.at > restartedAt));
    assert.equal(answer.link_reports, true, 'B answers A with link_reports: true');
    const report = await waitFor("B's failed report", 15000, async () => (await b.sent()).find((m) => m.command === 'p2p_link_state' && m.at > restartedAt));
    assert.deepEqual([report.id, report.peer_id, report.state], [answer.id, aId, 'failed'], 'B reports its link with A failed');
    const frameAt = await b.firstFrameAfter(report.at, 5000);
    await b.plays('edge', 0);
    await b.decodes(30);
    const answerToReport = report.at - answer.at;
    log(`B: answered A at +${answer.at - restartedAt} ms, reported failed ${answerToReport} ms later, first frame from the edge ${frameAt - report.at} ms after the report`);
    log(`FALLBACK_MS ${frameAt - report.at} (failed report -> first frame from the edge)`);
    assert.ok(frameAt - report.at < 1000, `the edge within 1 s of the report (${frameAt - report.at} ms)`);
    assert.equal(await host.metric('p2p.fallbacks_total{reason="link_failed"}'), 1, 'the server counted one failed link');
    assert.ok((await b.sent()).some((m) => m.command === 'request_offer' && m.at >= report.at), 'B asked again');
  },

  /**
   * First frame from page creation (navigation start -> first presented frame), our player and
   * OvenPlayer 0.10.54 alternately, RUNS each, one fresh context per run, both served from the
   * site's origin. Prints median and p90 of each.
   */
  async 'bench-first-frame'(host, browser) {
    const runs = Number(env.RUNS ?? 20);
    const ovenplayer = readFileSync(path.join(here, 'node_modules/ovenplayer-0.10.54/dist/ovenplayer.js'));
    const ours = readFileSync(path.join(here, '../../host/assets/player.js'));
    const results = { 'player.js': [], 'OvenPlayer 0.10.54': [] };
    const once = async (which) => {
      const context = await browser.newContext({ userAgent: LINUX_CHROME });
      const page = await context.newPage();
      await instrument(page);
      await page.route(`${SITE}/**`, (route) => {
        const url = new URL(route.request().url());
        if (url.pathname === '/ovenplayer.js') return route.fulfill({ body: ovenplayer, contentType: 'text/javascript' });
        if (url.pathname === '/player.js') return route.fulfill({ body: ours, contentType: 'text/javascript' });
        const body = which === 'player.js' ? embeddingPage({ url: STREAM_URL }).replace(`${HOST_URL}/player.js`, '/player.js') : ovenplayerPage();
        return route.fulfill({ body, contentType: 'text/html' });
      });
      await page.goto(`${SITE}/`);
      const first = await waitFor(`${which}'s first frame`, 15000, () => page.evaluate(() => window.__frameTimes[0] && window.__frameTimes[0] - performance.timeOrigin));
      await context.close();
      return Math.round(first);
    };
    for (let run = 0; run < runs; run += 1) {
      for (const which of run % 2 ? Object.keys(results).reverse() : Object.keys(results)) results[which].push(await once(which));
    }
    for (const [which, xs] of Object.entries(results)) {
      log(`FIRST_FRAME_MS ${which}: median ${median(xs)}, p90 ${percentile(xs, 90)} (n ${xs.length}: ${xs.join(' ')})`);
    }
  },

  /**
   * CPU of the relaying Chromium (its whole process tree, and its renderers), read from /proc
   * over WINDOW_S seconds while its one tab plays from the edge and relays to 0, 1, then 2 clients
   * (the clients in another Chromium). Prints % of one core for each.
   */
  async 'bench-relay-cpu'(host, browser) {
    const seconds = Number(env.WINDOW_S ?? 20);
    // A switch Chromium ignores, to find this browser's process in /proc.
    const marker = `--p2p-bench-relaying=${process.pid}`;
    const relaying = await launchChromium([...CHROMIUM_ARGS, marker]);
    try {
      const a = await Viewer.open(relaying, 'A');
      await a.plays('edge', 0);
      await a.decodes(60);
      const aId = await a.sessionId();
      const root = browserPid(marker);
      const clients = [];
      for (let k = 0; k <= 2; k += 1) {
        if (k > 0) {
          const v = await Viewer.open(browser, `client${k}`, { userAgent: LINUX_CHROME });
          await v.plays('peer', aId);
          await v.decodes(60);
          clients.push(v);
          await waitFor(`A to relay to ${k}`, 10000, async () => (await a.page.evaluate(() => window.player.relaying)) === k);
        }
        await sleep(3000); // past the encoder's ramp-up
        const usage = await cpuOver(root, seconds);
        const frames = await a.framesDecoded();
        log(`RELAY_CPU clients ${k}: whole Chromium ${usage.all.toFixed(1)} % of a core, renderers ${usage.renderer.toFixed(1)} %, ${usage.processes} processes (${seconds} s; A decoded ${frames} frames)`);
      }
      for (const v of clients) await v.close();
    } finally {
      await relaying.close();
    }
  },
};

/** utime+stime of `root` and its descendants over `seconds`, as % of one core (all, and renderers). */
async function cpuOver(root, seconds) {
  const tick = 100; // USER_HZ on Linux
  const before = treeTicks(root);
  await sleep(seconds * 1000);
  const after = treeTicks(root);
  let [all, renderer] = [0, 0];
  for (const [pid, { ticks, isRenderer }] of after) {
    const used = ticks - (before.get(pid)?.ticks ?? 0);
    all += used;
    if (isRenderer) renderer += used;
  }
  const percent = (t) => (100 * t) / tick / seconds;
  return { all: percent(all), renderer: percent(renderer), processes: after.size };
}

/** The browser process (not a child: those have `--type=`) whose command line has `marker`. */
function browserPid(marker) {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.includes(marker) && !args.some((a) => a.startsWith('--type='))) return Number(entry);
    } catch { /* gone meanwhile */ }
  }
  throw new Error(`no Chromium with ${marker}`);
}

/** pid -> { ticks: utime+stime, isRenderer } for `root` and every descendant. */
function treeTicks(root) {
  const parents = new Map();
  const info = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      info.set(Number(entry), { ticks: Number(fields[11]) + Number(fields[12]), isRenderer: cmdline.includes('--type=renderer') });
    } catch { /* gone meanwhile */ }
  }
  const tree = new Map();
  const inTree = (pid) => {
    for (let p = pid; p > 1; p = parents.get(p)) if (p === root) return true;
    return false;
  };
  for (const [pid, data] of info) if (inTree(pid)) tree.set(pid, data);
  return tree;
}

// ---------------------------------------------------------------------------------------------

/** Prints what each page of `browser` saw (after a failure). */
async function printPages(browser) {
  for (const context of browser?.contexts() ?? []) {
    for (const page of context.pages()) {
      const seen = await page.evaluate(() => JSON.stringify({ sent: window.__sent.map((m) => ({ ...m, sdp: undefined })), received: window.__received.map((m) => ({ ...m, sdp: m.sdp?.sdp?.length })), pcs: window.__pcs.map((p) => [p.configuration, p.pc.connectionState, p.pc.iceConnectionState, p.pc.signalingState]), events: window.__events, video: [...document.querySelectorAll('video')].map((v) => ({ paused: v.paused, readyState: v.readyState, muted: v.muted })) })).catch((err) => String(err));
      console.error(`a page: ${seen}`);
    }
  }
}

await runScenario('player.mjs', scenarios, () => new Host(), CHROMIUM_ARGS, { onFailure: printPages });
