// Real OvenPlayer releases (and OvenLiveKit publishing) in real headless Chromium against the
// real host.
//
// Run by tests/tests/browser.rs inside a fresh network namespace (192.0.2.1 on a veth pair), so
// Chromium gathers a usable ICE candidate and nothing leaves the machine:
//   node scenario.mjs <edge-play|p2p-relay|p2p-rescue|p2p-move|p2p-fast-rescue|firewalled-edge|own-p2p-relay|p2p-tree|olk-publish|olk-h264|olk-whip|olk-join|olk-p2p|page-publish>
// Environment: HOST_BIN, HOST_CONFIG (the host and its config; P2P scenarios read their timing
// settings from it, p2p-tree its <AccessToken>, publishing ones the <Publish><Token>), HOST_PORT, HOST_ADDR, CHROMIUM,
// ICE_PORTS (firewalled-edge: the configured ICE port range, e.g. 10000-10004), RESULTS_DIR (where
// p2p-tree saves its screenshots; default the system's temporary folder, so a test run leaves the
// repository as it was: RESULTS_DIR=tests/results refreshes the committed ones), BROWSER_ECHO=1 to
// echo the pages' consoles. Exits non-zero with the reason when a check fails.

import { spawn } from 'node:child_process';
import http from 'node:http';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CHROMIUM_ARGS as BASE_ARGS, DESKTOP_CHROME, LINUX_CHROME, RECORD_SIGNALLING, TIME_FRAMES, log, runScenario, servePlayer, sleep,
  waitFor,
} from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
/** Where the publishing page is served (inside the namespace, beside the host). */
const PAGES_PORT = 8090;
const ADDR = env.HOST_ADDR ?? '192.0.2.1';
const RESULTS_DIR = env.RESULTS_DIR ?? path.join(os.tmpdir(), 'p2p-host-results');
const CHROMIUM_ARGS = [
  ...BASE_ARGS,
  // Publishing pages: a fake camera and microphone (a test pattern and a beep), granted without
  // asking; getUserMedia needs a secure context, which plain http pages are not otherwise.
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  `--unsafely-treat-insecure-origin-as-secure=http://player.test,http://${ADDR}:${PORT},http://${ADDR}:${PAGES_PORT}`,
];

/** A `<P2P>` setting of HOST_CONFIG in ms, or the plugin's default when the config omits it. */
function configuredMs(tag, fallback) {
  const match = new RegExp(`<${tag}>\\s*(\\d+)\\s*</${tag}>`).exec(readFileSync(env.HOST_CONFIG, 'utf8'));
  return match ? Number(match[1]) : fallback;
}

/** HOST_CONFIG's `<Managers><API><AccessToken>`, or null when it has none. */
function configuredAccessToken() {
  const match = /<AccessToken>([^<]*)<\/AccessToken>/.exec(readFileSync(env.HOST_CONFIG, 'utf8'));
  return match ? match[1].trim() : null;
}

/** HOST_CONFIG's first `<Publish><Token>`, or null when it has none. */
function configuredPublishToken() {
  const match = /<Publish>[\s\S]*?<Token>([^<]*)<\/Token>/.exec(readFileSync(env.HOST_CONFIG, 'utf8'));
  return match ? match[1].trim() : null;
}

// ---------------------------------------------------------------------------------------------
// The host process

class Host {
  constructor() {
    this.log = '';
    this.child = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], {
      env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const pipe of [this.child.stdout, this.child.stderr]) pipe.on('data', (d) => { this.log += d; });
  }
  async ready() {
    await waitFor('the host to serve', 20000, () => {
      if (this.child.exitCode !== null) throw new Error(`host exited:\n${this.log}`);
      return this.log.includes('waiting for viewers');
    });
  }
  async stats() {
    const response = await fetch(`http://127.0.0.1:${PORT}/stats`);
    return response.json();
  }
  /** The host's edge egress to session `id` (0 when it never served it). */
  async egress(id) {
    const session = (await this.stats()).sessions.find((s) => s.id === id);
    assert.ok(session, `session ${id} is live at the host`);
    return session.egress_bytes;
  }
  async metric(name) {
    return (await this.stats()).metrics[name] ?? 0;
  }
  stop() { this.child.kill('SIGKILL'); }
}

// ---------------------------------------------------------------------------------------------
// Viewers: one browser context each (no shared state), instrumented without touching the player

/** Page init script: `window.__frames()` counts the frames the page's videos decoded. */
const COUNT_FRAMES = () => {
  window.__frames = () => [...document.querySelectorAll('video')]
    .reduce((n, v) => n + (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0), 0);
};

/**
 * Records every signalling message `page` receives (with the ICE candidates an `offer` or
 * `candidate` carries) and every one it sends, counts decoded frames, and timestamps every
 * presented video frame (`window.__frameTimes`).
 */
async function instrument(page) {
  await page.addInitScript(RECORD_SIGNALLING, true);
  await page.addInitScript(TIME_FRAMES);
  await page.addInitScript(COUNT_FRAMES);
}

const ovenplayerPage = (wsUrl) => `<!doctype html><html><body>
<div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>
  window.__p2pMode = [];
  window.__errors = [];
  const player = OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }] });
  window.__states = [];
  player.on('p2pMode', (on) => window.__p2pMode.push(on));
  player.on('stateChanged', (e) => window.__states.push({ at: Date.now(), state: e.newstate }));
  player.on('error', (e) => window.__errors.push(JSON.stringify(e)));
</script></body></html>`;

class Viewer {
  /**
   * `player` is `ovenplayer-0.10.38`, `ovenplayer-0.10.54` or `own` (the host's page at `/`);
   * `userAgent` is what both the page and its WebSocket upgrade say (classification reads it);
   * `stream` is the `app/stream` it plays.
   */
  static async open(browser, name, player, userAgent = DESKTOP_CHROME, stream = 'app/stream') {
    const context = await browser.newContext({ userAgent });
    const page = await context.newPage();
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${name} page error: ${e.message}`));
    await instrument(page);
    if (player === 'own') {
      await page.goto(`http://${ADDR}:${PORT}/${stream === 'app/stream' ? '' : `?stream=${stream}`}`);
    } else {
      const script = readFileSync(path.join(here, 'node_modules', player, 'dist', 'ovenplayer.js'));
      await servePlayer(page, script, ovenplayerPage(`ws://${ADDR}:${PORT}/${stream}`));
      await page.goto('http://player.test/');
    }
    log(`${name} opened (${player}${userAgent === DESKTOP_CHROME ? '' : userAgent === LINUX_CHROME ? ', Linux Chrome' : `, ${userAgent}`}${stream === 'app/stream' ? '' : `, ${stream}`})`);
    return Object.assign(new Viewer(), { name, player, context, page });
  }
  frames() { return this.page.evaluate(() => window.__frames()); }
  signals() { return this.page.evaluate(() => window.__signals); }
  /** Every message this page sent, as `{at, command, id, peer_id}`. */
  sent() { return this.page.evaluate(() => window.__sent); }
  /** When (Date.now()) each video frame was presented, in order. */
  frameTimes() { return this.page.evaluate(() => window.__frameTimes); }
  p2pMode() { return this.page.evaluate(() => window.__p2pMode ?? []); }
  /** The player's state changes (`stateChanged`), as `{at, state}`. */
  states() { return this.page.evaluate(() => window.__states ?? []); }
  /**
   * Whether the page has a video element and none is paused. `frames()` cannot tell: a paused
   * element still counts the frames its MediaStream decodes.
   */
  unpaused() {
    return this.page.evaluate(() => {
      const videos = [...document.querySelectorAll('video')];
      return videos.length > 0 && videos.every((v) => !v.paused);
    });
  }
  /** This viewer's session id: the `id` of the first offer it received. */
  async sessionId() {
    const offer = await waitFor(`${this.name}'s first offer`, 15000, async () => (await this.signals()).find((s) => s.command === 'offer'));
    return offer.id;
  }
  /**
   * Waits until `count` more frames are decoded; returns when the first of them arrived. The
   * element's count starts again from 0 when the player plays a new connection into it.
   */
  async playing(count = 60, ms = 20000) {
    const from = await this.frames();
    let [last, decoded, firstAt] = [from, 0, null];
    await waitFor(`${this.name} to decode ${count} frames (from ${from})`, ms, async () => {
      const now = await this.frames();
      decoded += now >= last ? now - last : now;
      last = now;
      if (decoded > 0 && firstAt === null) firstAt = Date.now();
      return decoded >= count;
    });
    log(`${this.name} plays: ${await this.frames()} frames decoded`);
    return firstAt;
  }
  /** Every ICE candidate the server sent this viewer (offers and trickled candidates), once each. */
  async offeredCandidates() {
    return [...new Set((await this.signals()).flatMap((s) => s.candidates ?? []))];
  }
  async close() { await this.context.close(); log(`${this.name} closed its page`); }
}

/** `v` plays from the edge: frames decoded, every offer from the edge, the host counts its bytes. */
async function playsFromEdge(host, v, ms = 20000) {
  await v.playing(60, ms);
  const id = await v.sessionId();
  const offers = (await v.signals()).filter((s) => s.command === 'offer');
  assert.ok(offers.every((o) => o.peer_id === 0), `${v.name}: every offer comes from the edge`);
  assert.ok((await host.egress(id)) > 50000, `${v.name}: the host counts what it sends`);
  if (v.player !== 'own') assert.deepEqual(await v.p2pMode(), [false], `${v.name}: p2pMode false`);
}

/**
 * Waits until `v` is told that `stream` ended (the host's 404 `stream ... stopped`, after `since`,
 * when `cause` happened), and logs what OvenPlayer reported; returns the message.
 */
async function streamEnded(v, stream, since, cause, ms = 15000) {
  const ended = await waitFor(`${v.name} to be told ${stream} ended`, ms, async () => (await v.signals()).find((m) => m.code !== undefined && m.at >= since));
  assert.deepEqual([ended.code, ended.error], [404, `stream ${stream} stopped`], `${v.name}'s error message`);
  await sleep(500);
  const errors = await v.page.evaluate(() => window.__errors);
  const states = (await v.states()).filter((e) => e.at >= since).map((e) => `${e.state} (+${e.at - since} ms)`);
  log(`${v.name}: {code: ${ended.code}, error: "${ended.error}"} +${ended.at - since} ms after ${cause}; OvenPlayer error events: ${errors.join(' ') || 'none'}; states: ${states.join(', ') || 'none'}`);
  assert.ok(errors.length > 0, `OvenPlayer (${v.name}) reports an error when the stream ends`);
  return ended;
}

/**
 * OvenPlayer 0.10.38 on `stream`: A (a desktop Windows Chrome: a host) plays from the edge and
 * relays to B and C (`clientUserAgent`), which play with p2pMode true while the edge sends them
 * nothing; A's page closes: both are told `stop`, get the edge's offer and play again. Logs
 * `FAILOVER_MS`.
 */
async function relaysAndFallsBack(host, browser, stream, clientUserAgent) {
  const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.38', DESKTOP_CHROME, stream);
  await a.playing();
  const aId = await a.sessionId();
  const b = await Viewer.open(browser, 'B', 'ovenplayer-0.10.38', clientUserAgent, stream);
  const c = await Viewer.open(browser, 'C', 'ovenplayer-0.10.38', clientUserAgent, stream);
  const clients = [b, c];
  for (const v of clients) {
    const offer = await waitFor(`${v.name}'s offer`, 15000, async () => (await v.signals()).find((s) => s.command === 'offer'));
    assert.equal(offer.peer_id, aId, `${v.name}'s offer comes from host peer A`);
    await v.playing();
    assert.deepEqual(await v.p2pMode(), [true], `${v.name}: p2pMode true`);
  }
  const asked = (await a.signals()).filter((s) => s.command === 'request_offer_p2p').map((s) => s.peer_id).sort();
  const ids = [await b.sessionId(), await c.sessionId()];
  assert.deepEqual(asked, [...ids].sort(), 'A was asked to offer to B and C');
  await sleep(2000);
  for (const [v, id] of clients.map((v, i) => [v, ids[i]])) {
    assert.equal(await host.egress(id), 0, `the edge sends nothing to ${v.name}`);
    await v.playing(30);
  }
  log(`edge egress to A ${await host.egress(aId)} bytes, to B and C 0: the host peer carries them`);

  const closedAt = Date.now();
  await a.close();
  const rescued = await Promise.all(clients.map(async (v, i) => {
    await waitFor(`${v.name}'s stop from the host`, 5000, async () => (await v.signals()).some((s) => s.command === 'stop' && s.peer_id === aId));
    await waitFor(`${v.name}'s edge offer`, 10000, async () => (await v.signals()).some((s) => s.command === 'offer' && s.peer_id === 0));
    const firstFrame = await v.playing(60, 30000);
    assert.deepEqual(await v.p2pMode(), [true, false], `${v.name}: p2pMode true then false`);
    assert.ok((await host.egress(ids[i])) > 0, `the edge serves ${v.name} now`);
    return firstFrame - closedAt;
  }));
  log(`FAILOVER_MS ${rescued.join(' ')} (host page closed -> first frame from the edge)`);
}

/** `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...` */
function candidatePort(candidate) {
  const fields = candidate.replace(/^a=/, '').split(/\s+/);
  const port = Number(fields[5]);
  return fields.length >= 8 && fields[6] === 'typ' && Number.isInteger(port) ? port : null;
}

/** `ICE_PORTS`: `10000-10004` or a single port. */
function icePorts() {
  const match = /^(\d+)(?:-(\d+))?$/.exec(env.ICE_PORTS ?? '');
  if (!match) throw new Error(`ICE_PORTS must name the configured ICE port range, e.g. 10000-10004 (got ${JSON.stringify(env.ICE_PORTS)})`);
  const [low, high] = [Number(match[1]), Number(match[2] ?? match[1])];
  return { low, high, has: (port) => port >= low && port <= high };
}

// ---------------------------------------------------------------------------------------------
// Publishers: OvenLiveKit 1.5.8 (OME's publishing library) with Chromium's fake camera and
// microphone (a test pattern and a beep)

/** The publishing page: `window.publish(url, config)` starts a new OvenLiveKit instance (the last
 *  one removed) and records what its callbacks report in `window.__olk`. */
const olkPage = () => `<!doctype html><html><body>
<video id="preview" muted autoplay playsinline></video>
<script src="/OvenLiveKit.min.js"></script>
<script>
  // Every HTTP exchange (WHIP): method, URL, status, Location.
  window.__http = [];
  const nativeFetch = window.fetch;
  window.fetch = async (url, options = {}) => {
    const response = await nativeFetch(url, options);
    window.__http.push({ at: Date.now(), method: options.method ?? 'GET', url: String(url), status: response.status, location: response.headers.get('location') });
    return response;
  };
  window.publish = async (url, config) => {
    window.__kit?.remove();
    const olk = window.__olk = { errors: [], closed: [], ice: [], connectedAt: null };
    const kit = window.__kit = OvenLiveKit.create({ callbacks: {
      error: (e) => olk.errors.push(typeof e === 'string' ? e : String(e?.message ?? e?.type ?? e)),
      connected: () => { olk.connectedAt ??= Date.now(); },
      connectionClosed: (type) => olk.closed.push(type),
      iceStateChange: (state) => olk.ice.push(state),
    } });
    // WHIP's fetch failing (network, CORS) rejects a promise OvenLiveKit never handles.
    window.onunhandledrejection = (e) => olk.errors.push('unhandled rejection: ' + e.reason);
    kit.attachMedia(document.getElementById('preview'));
    await kit.getUserMedia({ video: { width: 640, height: 360, frameRate: 30 }, audio: true });
    kit.startStreaming(url, config);
  };
  /** What the publisher's connection sends: frames encoded, keyframes, bytes, the codec. */
  window.__sending = async () => {
    const pc = window.__kit?.peerConnection;
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()];
    const video = stats.find((s) => s.type === 'outbound-rtp' && s.kind === 'video');
    const codec = stats.find((s) => s.id === video?.codecId)?.mimeType;
    return video ? { frames: video.framesEncoded ?? 0, keyframes: video.keyFramesEncoded ?? 0, plis: video.pliCount ?? 0, bytes: video.bytesSent ?? 0, codec } : null;
  };
</script></body></html>`;

/**
 * The publishing page's own web server (on ADDR, a port of its own), started on first use; its
 * origin. Not a Playwright route: the page's requests to the host (WHIP) are cross-origin, and a
 * routed page would have Playwright answer their CORS preflights instead of the host.
 */
let pagesServer = null;
async function pagesOrigin() {
  if (!pagesServer) {
    const script = readFileSync(path.join(here, 'node_modules', 'ovenlivekit', 'dist', 'OvenLiveKit.min.js'));
    pagesServer = http.createServer((request, response) => {
      const [body, type] = request.url === '/OvenLiveKit.min.js' ? [script, 'text/javascript'] : [olkPage(), 'text/html'];
      response.writeHead(200, { 'Content-Type': type }).end(body);
    });
    await new Promise((resolve) => pagesServer.listen(PAGES_PORT, ADDR, resolve));
  }
  return `http://${ADDR}:${PAGES_PORT}`;
}

class Publisher {
  /** A page of its own (one browser context) holding OvenLiveKit and the fake camera. */
  static async open(browser, name) {
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const page = await context.newPage();
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${name} page error: ${e.message}`));
    await instrument(page);
    await page.goto(`${await pagesOrigin()}/publish`);
    log(`${name} opened (OvenLiveKit ${await page.evaluate(() => OvenLiveKit.getVersion())})`);
    return Object.assign(new Publisher(), { name, context, page });
  }
  /** Starts publishing to `url` (ws:// OME's signalling, http:// WHIP) with OvenLiveKit's `config`. */
  async publish(url, config = {}) {
    await this.page.evaluate(([u, c]) => window.publish(u, c), [url, config]);
    log(`${this.name} publishes to ${url}${config.httpHeaders ? ` with ${JSON.stringify(config.httpHeaders)}` : ''}`);
  }
  /** What OvenLiveKit's callbacks said: `{errors, closed, ice, connectedAt}`. */
  olk() { return this.page.evaluate(() => window.__olk); }
  sending() { return this.page.evaluate(() => window.__sending()); }
  signals() { return this.page.evaluate(() => window.__signals); }
  sent() { return this.page.evaluate(() => window.__sent); }
  /** The page's HTTP exchanges (WHIP), as `{at, method, url, status, location}`. */
  http() { return this.page.evaluate(() => window.__http); }
  /** OvenLiveKit's `stopStreaming()` (WHIP: closes the connection, then DELETEs the resource). */
  async stop() { await this.page.evaluate(() => window.__kit.stopStreaming()); log(`${this.name} stopped streaming`); }
  /** Waits for OvenLiveKit's first error callback; returns every error it reported. */
  async refused(ms = 10000) {
    return waitFor(`${this.name}'s OvenLiveKit error callback`, ms, async () => {
      const errors = (await this.olk()).errors;
      return errors.length > 0 ? errors : null;
    });
  }
  /** Waits until ICE is connected and `frames` frames went out; returns the sender's figures. */
  async sends(frames = 30, ms = 20000) {
    await waitFor(`${this.name}'s connection (OvenLiveKit connected)`, ms, async () => {
      const olk = await this.olk();
      if (olk.errors.length > 0) throw new Error(`${this.name}: OvenLiveKit reported ${JSON.stringify(olk.errors)}`);
      return olk.connectedAt;
    });
    const sending = await waitFor(`${this.name} to send ${frames} frames`, ms, async () => {
      const s = await this.sending();
      return s && s.frames >= frames && s.bytes > 0 ? s : null;
    });
    log(`${this.name} sends: ${sending.codec}, ${sending.frames} frames (${sending.keyframes} keyframes), ${sending.bytes} bytes`);
    return sending;
  }
  async close() { await this.context.close(); log(`${this.name} closed its page`); }
}

// ---------------------------------------------------------------------------------------------
// The host's live P2P page (/p2p)

/**
 * Installed in the /p2p page: `window.__shownTree(stream)` is what the page shows for `stream`,
 * the viewers directly under the edge, each as its data-* attributes (strings: id, upstream,
 * connected, clients) with `fed`, the viewers nested under it; null until the stream is drawn.
 */
const SHOWN_TREE = () => {
  const fed = (li) => [...(li.querySelector(':scope > ul')?.children ?? [])]
    .filter((child) => child.matches('li.viewer'))
    .map((child) => ({ ...child.dataset, fed: fed(child) }));
  window.__shownTree = (stream) => {
    const section = [...document.querySelectorAll('section')].find((s) => s.dataset.stream === stream);
    const edge = section?.querySelector(':scope > ul > li.edge');
    return edge ? fed(edge) : null;
  };
};

/** The ids of `nodes`, sorted, for comparing with the ids expected. */
const idsOf = (nodes) => (nodes ?? []).map((n) => n.id).sort();

// ---------------------------------------------------------------------------------------------
// Scenarios

const scenarios = {
  /** Our page and both OvenPlayer releases play from the edge (no plugin in the config). */
  async 'edge-play'(host, browser) {
    const viewers = [];
    for (const [name, player] of [['own', 'own'], ['op54', 'ovenplayer-0.10.54'], ['op38', 'ovenplayer-0.10.38']]) {
      viewers.push(await Viewer.open(browser, name, player));
    }
    for (const v of viewers) await playsFromEdge(host, v);
  },

  /**
   * Eight viewers join at once (our page and OvenPlayer 0.10.54, one browser context each) behind
   * a firewall that lets UDP through only on the configured ICE ports (the test installs it in the
   * namespace): every one plays from the edge, and every candidate the host offered is in ICE_PORTS.
   */
  async 'firewalled-edge'(host, browser) {
    const range = icePorts();
    const players = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'own' : 'ovenplayer-0.10.54'));
    const viewers = await Promise.all(players.map((player, i) => Viewer.open(browser, `v${i + 1}-${player === 'own' ? 'own' : 'op54'}`, player)));
    const played = await Promise.allSettled(viewers.map((v) => playsFromEdge(host, v, 45000)));

    const problems = [];
    for (const [i, v] of viewers.entries()) {
      const candidates = await v.offeredCandidates();
      const ports = candidates.map(candidatePort);
      const outside = candidates.filter((_, j) => ports[j] === null || !range.has(ports[j]));
      const outcome = played[i].status === 'fulfilled' ? 'plays' : `does not play (${played[i].reason?.message ?? played[i].reason})`;
      log(`${v.name}: offered ports ${[...new Set(ports)].join(' ') || 'none'}; ${outcome}`);
      if (played[i].status !== 'fulfilled') problems.push(`${v.name} ${outcome}`);
      if (candidates.length === 0) problems.push(`${v.name} was offered no ICE candidate`);
      for (const c of outside) problems.push(`${v.name} was offered a candidate outside ${range.low}-${range.high}: ${c}`);
    }
    assert.deepEqual(problems, [], `every viewer behind the firewall plays, on candidates in ${range.low}-${range.high} only`);
  },

  /** OvenPlayer 0.10.38: one host peer relays to two clients; they fall back when it goes. */
  async 'p2p-relay'(host, browser) {
    await relaysAndFallsBack(host, browser, 'app/stream', DESKTOP_CHROME);
  },

  /** OvenPlayer 0.10.54 as host never offers; its client is rescued by the offer deadline. */
  async 'p2p-rescue'(host, browser) {
    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.54');
    await a.playing();
    const aId = await a.sessionId();
    const askedAt = Date.now();
    const b = await Viewer.open(browser, 'B', 'ovenplayer-0.10.54');
    const bId = await waitFor('A to be asked for an offer to B', 15000, async () => (await a.signals()).find((s) => s.command === 'request_offer_p2p')?.peer_id);
    const firstFrame = await b.playing(60, 30000);
    const offers = (await b.signals()).filter((s) => s.command === 'offer');
    assert.deepEqual(offers.map((o) => o.peer_id), [0], 'B got exactly one offer, from the edge');
    assert.equal(await b.sessionId(), bId);
    assert.equal(await host.metric('p2p.fallbacks_total{reason="offer_deadline"}'), 1, 'the offer deadline fired once');
    await waitFor('A to be told to stop relaying to B', 5000, async () => (await a.signals()).some((s) => s.command === 'stop' && s.peer_id === bId));
    await a.playing(30);
    log(`RESCUE_MS ${firstFrame - askedAt} (B opened -> first frame from the edge)`);

    // A failed as a host: it is never chosen again on that socket, so the next viewer is not sent
    // to A. (B, a 0.10.54 host itself since the edge serves it, may be asked instead and miss the
    // same deadline: no offer has been measured, so that is OfferTimeoutMs again.) The edge serves C.
    const cOpened = Date.now();
    const c = await Viewer.open(browser, 'C', 'ovenplayer-0.10.54');
    const cFirstFrame = await c.playing();
    assert.deepEqual((await c.signals()).filter((s) => s.command === 'offer').map((o) => o.peer_id), [0], 'C is served by the edge');
    assert.equal((await a.signals()).filter((s) => s.command === 'request_offer_p2p').length, 1, 'A was not asked again');
    const bAsked = (await b.signals()).some((s) => s.command === 'request_offer_p2p');
    log(`C opened -> first frame from the edge: ${cFirstFrame - cOpened} ms (B ${bAsked ? 'was' : 'was not'} asked to offer to C first)`);
    assert.equal(aId === bId, false);
  },

  /**
   * Re-parenting (k = 1, OvenPlayer 0.10.38): C, who cannot host, plays from the edge because
   * host A is full with B; once B leaves, C (on the edge for more than MoveAfterMs) is told
   * `stop {peer_id: 0}`, asks again, gets A's offer and plays from A. Logs the playback gap.
   */
  async 'p2p-move'(host, browser) {
    const moveAfterMs = configuredMs('MoveAfterMs', 5000);
    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.38');
    await a.playing();
    const aId = await a.sessionId();
    const b = await Viewer.open(browser, 'B', 'ovenplayer-0.10.38', LINUX_CHROME);
    const bOffer = await waitFor("B's offer", 15000, async () => (await b.signals()).find((s) => s.command === 'offer'));
    assert.equal(bOffer.peer_id, aId, "B's offer comes from host peer A");
    const bId = bOffer.id;
    await b.playing();
    assert.deepEqual(await b.p2pMode(), [true], 'B: p2pMode true');

    // A is full (k = 1): C plays from the edge, and stays there while A has no vacancy.
    const c = await Viewer.open(browser, 'C', 'ovenplayer-0.10.38', LINUX_CHROME);
    await playsFromEdge(host, c);
    const cId = await c.sessionId();
    await sleep(moveAfterMs + 1000);
    assert.equal((await c.signals()).some((s) => s.command === 'stop'), false, 'C is not moved while A is full');
    assert.equal(await host.metric('p2p.moves_total'), 0, 'no move while A is full');
    const edgeBefore = await host.egress(cId);
    await c.playing(30);
    assert.ok((await host.egress(cId)) > edgeBefore, 'the edge still serves C');
    assert.ok((await c.frameTimes()).length > 0, 'requestVideoFrameCallback timestamps C\'s frames');
    log(`C has played from the edge for more than MoveAfterMs (${moveAfterMs} ms); B leaves`);

    await b.close();
    const stop = await waitFor("C's stop {peer_id: 0}", 5000, async () => (await c.signals()).find((s) => s.command === 'stop'));
    assert.deepEqual([stop.id, stop.peer_id], [cId, 0], 'C is told stop {id: C, peer_id: 0}');
    await waitFor("C's request_offer after the stop", 5000, async () => (await c.sent()).some((m) => m.command === 'request_offer' && m.at >= stop.at));
    const moved = await waitFor("C's offer after the stop", 10000, async () => (await c.signals()).find((s) => s.command === 'offer' && s.at >= stop.at));
    assert.equal(moved.peer_id, aId, "C's new offer comes from host peer A");
    await c.playing(60, 20000);
    assert.deepEqual(await c.p2pMode(), [false, true], 'C: p2pMode false (edge) then true (A)');
    const asked = (await a.signals()).filter((s) => s.command === 'request_offer_p2p').map((s) => s.peer_id);
    assert.deepEqual(asked, [bId, cId], 'A was asked to offer to B, then to C');
    assert.ok((await a.signals()).some((s) => s.command === 'stop' && s.peer_id === bId), 'A was told B left');
    assert.ok((await a.signals()).some((s) => s.command === 'answer_p2p' && s.peer_id === cId), "A got C's answer");
    const edgeAfter = await host.egress(cId);
    await sleep(2000);
    await c.playing(30);
    assert.equal(await host.egress(cId), edgeAfter, 'the edge sends C nothing any more: A carries it');
    assert.equal(await host.metric('p2p.moves_total'), 1, 'one move');
    assert.equal(await host.metric('p2p.moves_completed_total'), 1, 'the move completed');

    // The gap: last frame presented before A's offer arrived (from the edge) -> first after it.
    const times = await c.frameTimes();
    const lastFromEdge = times.filter((t) => t < moved.at).pop();
    const firstFromA = times.find((t) => t > moved.at);
    assert.ok(lastFromEdge !== undefined && firstFromA !== undefined, 'C presented frames before and after the move');
    const betweenStopAndOffer = times.filter((t) => t > stop.at && t < moved.at).length;
    assert.ok(await c.unpaused(), 'C plays on after the move, without any user action');
    const around = (await c.states()).filter((e) => e.at >= stop.at - 1000).map((e) => `${e.state} (+${e.at - stop.at} ms)`);
    log(`C's player states from the stop on: ${around.join(', ')}`);
    log(`C: stop received; last edge frame presented at ${lastFromEdge - stop.at >= 0 ? '+' : ''}${lastFromEdge - stop.at} ms (${betweenStopAndOffer} after the stop); A's offer at +${moved.at - stop.at} ms; first frame from A at +${firstFromA - stop.at} ms`);
    log(`MOVE_GAP_MS ${firstFromA - lastFromEdge} (C's last frame from the edge -> first frame from A)`);
  },

  /**
   * The offer deadline follows the measured offer latency: host A (0.10.38) offers to ten
   * short-lived clients in turn, so the deadline drops from OfferTimeoutMs to its floor; then a
   * client Y of a 0.10.54 host X (which never offers) plays from the edge within 2 s of X being
   * asked, and X is never asked again.
   */
  async 'p2p-fast-rescue'(host, browser) {
    const [floor, ceiling] = [configuredMs('OfferTimeoutMinMs', 1000), configuredMs('OfferTimeoutMs', 4000)];
    const multiple = configuredMs('OfferTimeoutP99Multiple', 3);
    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.38');
    await a.playing();
    const aId = await a.sessionId();
    const ROUNDS = 10;
    for (let i = 1; i <= ROUNDS; i += 1) {
      const v = await Viewer.open(browser, `c${i}`, 'ovenplayer-0.10.38', LINUX_CHROME);
      const offer = await waitFor(`c${i}'s offer`, 15000, async () => (await v.signals()).find((s) => s.command === 'offer'));
      assert.equal(offer.peer_id, aId, `c${i}'s offer comes from host peer A`);
      await waitFor(`A to get c${i}'s answer`, 15000, async () => (await a.signals()).some((s) => s.command === 'answer_p2p' && s.peer_id === offer.id));
      if (i === 1) await v.playing(30);
      await v.close();
    }
    // The latency as A saw it (request_offer_p2p received -> offer_p2p sent); the plugin's adds
    // a signalling round trip.
    const [aSignals, aSent] = [await a.signals(), await a.sent()];
    const latencies = aSignals.filter((s) => s.command === 'request_offer_p2p').map((s) => {
      const offered = aSent.find((m) => m.command === 'offer_p2p' && m.peer_id === s.peer_id);
      assert.ok(offered, `A offered to ${s.peer_id}`);
      return offered.at - s.at;
    });
    assert.equal(latencies.length, ROUNDS, `A was asked ${ROUNDS} times`);
    const p99 = [...latencies].sort((x, y) => x - y)[Math.ceil(latencies.length * 0.99) - 1];
    const expected = Math.min(Math.max(p99 * multiple, floor), ceiling);
    log(`OFFER_LATENCY_MS ${latencies.join(' ')} (at A): p99 ${p99}, deadline about ${expected} ms (${multiple} x p99 in [${floor}, ${ceiling}])`);
    assert.equal(await host.metric('p2p.fallbacks_total{reason="offer_deadline"}'), 0, 'A met every deadline');
    // A has proven its relay: it would come first. It leaves, so the next client goes to X.
    await a.close();

    const x = await Viewer.open(browser, 'X', 'ovenplayer-0.10.54');
    await playsFromEdge(host, x);
    const xId = await x.sessionId();
    const openedAt = Date.now();
    const y = await Viewer.open(browser, 'Y', 'ovenplayer-0.10.54', LINUX_CHROME);
    const asked = await waitFor('X to be asked for an offer to Y', 15000, async () => (await x.signals()).find((s) => s.command === 'request_offer_p2p'));
    await playsFromEdge(host, y);
    const yId = await y.sessionId();
    assert.equal(asked.peer_id, yId, 'X was asked to offer to Y');
    const edgeOffer = (await y.signals()).find((s) => s.command === 'offer');
    const firstFrame = (await y.frameTimes())[0];
    assert.ok(firstFrame !== undefined, "Y's frames are timestamped");
    assert.equal(await host.metric('p2p.fallbacks_total{reason="offer_deadline"}'), 1, 'the offer deadline fired once');
    await waitFor('X to be told to stop relaying to Y', 5000, async () => (await x.signals()).some((s) => s.command === 'stop' && s.peer_id === yId));
    const deadline = edgeOffer.at - asked.at;
    const rescue = firstFrame - asked.at;
    log(`DEADLINE_MS ${deadline} (X asked -> Y's edge offer; the ceiling is ${ceiling})`);
    log(`ASKED_TO_FRAME_MS ${rescue} (X asked -> Y's first frame from the edge)`);
    log(`RESCUE_MS ${firstFrame - openedAt} (Y opened -> first frame from the edge)`);
    assert.ok(deadline >= floor - 50, `the deadline (${deadline} ms) is never under OfferTimeoutMinMs (${floor} ms)`);
    assert.ok(deadline < ceiling / 2, `the deadline (${deadline} ms) went down from OfferTimeoutMs (${ceiling} ms)`);
    assert.ok(rescue < 2000, `Y plays from the edge within 2 s of X being asked (${rescue} ms)`);

    // X missed its deadline: it is never asked again on that socket. Z, who cannot host, finds no
    // host and is served by the edge at once.
    const z = await Viewer.open(browser, 'Z', 'ovenplayer-0.10.54', LINUX_CHROME);
    await playsFromEdge(host, z);
    const zAsked = (await z.sent()).find((m) => m.command === 'request_offer');
    const zOffer = (await z.signals()).find((s) => s.command === 'offer');
    log(`Z: request_offer -> edge offer ${zOffer.at - zAsked.at} ms`);
    assert.ok(zOffer.at - zAsked.at < 500, `Z's edge offer came at once (${zOffer.at - zAsked.at} ms), not after a deadline`);
    assert.equal((await x.signals()).filter((s) => s.command === 'request_offer_p2p').length, 1, 'X was not asked again');
    assert.equal(await host.metric('p2p.fallbacks_total{reason="offer_deadline"}'), 1, 'no other deadline fired');
    assert.notEqual(xId, yId);
  },

  /**
   * Our own page in both P2P roles (k = 2): tab A (desktop Windows Chrome) plays from the edge and
   * relays to tabs B and C (Linux Chrome: clients only), which say so on the page and decode
   * frames on their connection to A while the edge sends them nothing. A closes: B and C are told
   * `stop`, ask again by themselves (no click) and play from the edge. Logs how long that takes.
   */
  async 'own-p2p-relay'(host, browser) {
    const text = (v, id) => v.page.evaluate((i) => document.getElementById(i).textContent, id);
    /** Waits until the page's `#frames` (framesDecoded of its main connection) grows by `count`. */
    const decodes = async (v, count = 30) => {
      const from = Number(await text(v, 'frames'));
      await waitFor(`${v.name}'s #frames to grow by ${count} from ${from}`, 15000, async () => Number(await text(v, 'frames')) >= from + count);
    };
    const a = await Viewer.open(browser, 'A', 'own');
    await playsFromEdge(host, a);
    const aId = await a.sessionId();
    await waitFor("A's page to say it plays from the edge", 5000, async () => (await text(a, 'source')) === 'the edge');
    await decodes(a);

    const clients = [await Viewer.open(browser, 'B', 'own', LINUX_CHROME), await Viewer.open(browser, 'C', 'own', LINUX_CHROME)];
    // When the page puts a new stream into its <video> (frames presented after that are the new
    // connection's; a frame of the old one may still be presented just after its stop).
    for (const v of clients) await v.page.evaluate(() => { window.__loads = []; document.getElementById('video').addEventListener('loadstart', () => window.__loads.push(Date.now())); });
    const ids = [];
    for (const v of clients) {
      const offer = await waitFor(`${v.name}'s offer`, 15000, async () => (await v.signals()).find((s) => s.command === 'offer'));
      assert.equal(offer.peer_id, aId, `${v.name}'s offer comes from host peer A`);
      ids.push(offer.id);
      await waitFor(`${v.name}'s page to say it plays from A`, 5000, async () => (await text(v, 'source')) === `peer ${aId}`);
      await v.playing();
      await decodes(v);
      const answer = (await v.sent()).find((m) => m.command === 'answer');
      assert.deepEqual([answer.id, answer.peer_id], [offer.id, aId], `${v.name} answers {id: itself, peer_id: A}`);
      assert.ok((await v.sent()).some((m) => m.command === 'candidate' && m.peer_id === aId), `${v.name} trickles candidates to A`);
    }
    const aSent = await a.sent();
    for (const id of ids) {
      assert.ok(aSent.some((m) => m.command === 'offer_p2p' && m.id === aId && m.peer_id === id), `A sent offer_p2p to ${id}`);
      assert.ok(aSent.some((m) => m.command === 'candidate_p2p' && m.id === aId && m.peer_id === id), `A sent candidate_p2p to ${id}`);
      assert.ok((await a.signals()).some((s) => s.command === 'answer_p2p' && s.peer_id === id), `A got ${id}'s answer`);
    }
    await waitFor("A's page to say it relays to two clients", 5000, async () => (await text(a, 'clients')) === '2');
    const listed = (await text(a, 'client-list')).match(/\d+/g).map(Number).sort();
    assert.deepEqual(listed, [...ids].sort(), "A's page lists B and C");
    await sleep(2000);
    for (const [i, v] of clients.entries()) {
      assert.equal(await host.egress(ids[i]), 0, `the edge sends nothing to ${v.name}`);
      await decodes(v);
    }
    log(`edge egress to A ${await host.egress(aId)} bytes, to B and C 0; A's page: "${(await a.page.evaluate(() => document.body.innerText)).split('\n').find((l) => l.startsWith('Session'))}"`);

    const closedAt = Date.now();
    await a.close();
    const back = await Promise.all(clients.map(async (v, i) => {
      const stop = await waitFor(`${v.name}'s stop from A`, 5000, async () => (await v.signals()).find((s) => s.command === 'stop' && s.peer_id === aId));
      await waitFor(`${v.name}'s request_offer after the stop`, 5000, async () => (await v.sent()).some((m) => m.command === 'request_offer' && m.at >= stop.at));
      const offer = await waitFor(`${v.name}'s edge offer`, 10000, async () => (await v.signals()).find((s) => s.command === 'offer' && s.peer_id === 0));
      await waitFor(`${v.name}'s page to say it plays from the edge`, 10000, async () => (await text(v, 'source')) === 'the edge');
      await v.playing(60, 30000);
      await decodes(v);
      assert.ok(await v.unpaused(), `${v.name} plays on without any user action`);
      assert.ok((await host.egress(ids[i])) > 0, `the edge serves ${v.name} now`);
      const times = await v.frameTimes();
      const loaded = (await v.page.evaluate(() => window.__loads)).find((t) => t >= offer.at);
      assert.ok(loaded !== undefined, `${v.name}'s page put the edge's stream into its <video>`);
      const lastFromA = times.filter((t) => t < loaded).pop();
      const firstFromEdge = times.find((t) => t > loaded);
      log(`${v.name}: stop +${stop.at - closedAt} ms, edge offer +${offer.at - closedAt} ms, edge stream in <video> +${loaded - closedAt} ms, first edge frame +${firstFromEdge - closedAt} ms after A closed (gap ${firstFromEdge - lastFromA} ms since its last frame from A)`);
      return firstFromEdge - closedAt;
    }));
    log(`BACK_TO_EDGE_MS ${back.join(' ')} (A's page closed -> first frame from the edge)`);
    for (const ms of back) assert.ok(ms < 3000, `back on the edge within 3 s of A closing (${ms} ms)`);
  },

  /**
   * OvenLiveKit 1.5.8 publishes the fake camera and microphone over OME's WebSocket signalling
   * (`ws://.../live/cam?direction=send&token=T`; application `live` takes publishers with the
   * token HOST_CONFIG names). First refused: a wrong token gets OvenLiveKit's error callback with
   * the host's 403 message, no token its 401 message. Then with the token: the offer comes from the
   * edge (peer_id 0, code 200), OvenLiveKit connects and sends; OvenPlayer 0.10.54 plays
   * `live/cam` (frames decoded and presented, advancing). The publisher's page closes: the viewer
   * is told the stream ended (logs what OvenPlayer reports).
   */
  async 'olk-publish'(host, browser) {
    const token = configuredPublishToken();
    assert.ok(token, 'HOST_CONFIG configures a <Publish><Token>');
    const url = (t) => `ws://${ADDR}:${PORT}/live/cam?direction=send${t === null ? '' : `&token=${t}`}`;
    const p = await Publisher.open(browser, 'P');
    for (const [what, presented, code, message] of [
      ['a wrong token', `not-${token}`, 403, "the token is not live's"],
      ['no token', null, 401, 'publishing to live needs its token'],
    ]) {
      const from = Date.now();
      await p.publish(url(presented));
      const errors = await p.refused();
      const error = (await p.signals()).find((m) => m.at >= from && m.code !== undefined);
      assert.deepEqual([error?.code, error?.error], [code, message], `${what}: the host's error message`);
      assert.deepEqual(errors, [message], `${what}: OvenLiveKit's error callback gets the host's message`);
      assert.equal((await p.signals()).some((m) => m.at >= from && m.command === 'offer'), false, `${what}: no offer`);
      log(`${what}: {code: ${error.code}, error: "${error.error}"}; OvenLiveKit error callback: ${JSON.stringify(errors)}; closed: ${JSON.stringify((await p.olk()).closed)}`);
    }

    await p.publish(url(token));
    await p.sends();
    const offer = (await p.signals()).find((m) => m.command === 'offer');
    assert.deepEqual([offer.peer_id, offer.code], [0, 200], 'the offer comes from the edge with code 200');
    assert.ok(offer.candidates.length > 0, 'the offer carries the edge\'s candidates');
    const sent = (await p.sent()).map((m) => m.command);
    assert.ok(sent.includes('answer'), 'OvenLiveKit answered the offer');

    const v = await Viewer.open(browser, 'V', 'ovenplayer-0.10.54', DESKTOP_CHROME, 'live/cam');
    await v.playing(60, 20000);
    const presented = (await v.frameTimes()).length;
    await sleep(1000);
    const advanced = (await v.frameTimes()).length - presented;
    assert.ok(advanced >= 10, `V presents new frames (${advanced} in 1 s)`);
    const vId = await v.sessionId();
    assert.ok((await host.egress(vId)) > 50000, 'the edge serves V');
    log(`V presented ${advanced} frames in 1 s; P sends ${JSON.stringify(await p.sending())}`);

    const closedAt = Date.now();
    await p.close();
    await streamEnded(v, 'live/cam', closedAt, "P's page closed");
  },

  /**
   * H.264 from a browser: OvenLiveKit publishes over OME's signalling with `preferredVideoFormat:
   * 'H264'` (it moves H.264 first in the host's offer and in its answer), so Chromium sends H.264;
   * OvenPlayer 0.10.54 and 0.10.38 and our page play it from the edge.
   */
  async 'olk-h264'(host, browser) {
    const p = await Publisher.open(browser, 'P');
    await p.publish(`ws://${ADDR}:${PORT}/live/h264?direction=send&token=${configuredPublishToken()}`, { preferredVideoFormat: 'H264' });
    assert.equal((await p.sends()).codec, 'video/H264', 'Chromium sends H.264');
    for (const [name, player] of [['op54', 'ovenplayer-0.10.54'], ['op38', 'ovenplayer-0.10.38'], ['own', 'own']]) {
      await playsFromEdge(host, await Viewer.open(browser, name, player, DESKTOP_CHROME, 'live/h264'));
    }
  },

  /**
   * OvenLiveKit 1.5.8 in WHIP mode (`POST http://.../live/cam2?direction=whip`, its `httpHeaders`
   * carrying `Authorization: Bearer T`; it prefers H.264 and sends no trickle): 201 with a
   * Location, it connects and sends; OvenPlayer 0.10.54 plays `live/cam2`. A second OvenLiveKit
   * page publishing the same name gets its error callback `Failed to fetch 409`; plain requests
   * from node get 401 without the token and 403 with a wrong one. The first publisher's
   * `stopStreaming()` DELETEs its resource (200): the viewer is told the stream ended, and the
   * second publisher may then publish the name (201); a new viewer plays it. The second
   * publisher's page closes without a DELETE: the viewer is told the stream ended once the host
   * notices the connection is gone (logs `WHIP_GONE_MS`).
   */
  async 'olk-whip'(host, browser) {
    const token = configuredPublishToken();
    assert.ok(token, 'HOST_CONFIG configures a <Publish><Token>');
    const url = `http://${ADDR}:${PORT}/live/cam2?direction=whip`;
    const bearer = { httpHeaders: { Authorization: `Bearer ${token}` } };
    // The publishing page is on another origin: the browser asks the host first (CORS preflight)
    // whether it may send OvenLiveKit's request headers (`Oven-Capabilities`: the camera's size
    // and frame rate); `*` would not cover Authorization.
    const wanted = ['authorization', 'content-type', 'oven-capabilities'];
    const preflight = await fetch(url, { method: 'OPTIONS', headers: { Origin: await pagesOrigin(), 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': wanted.join(',') } });
    const allowed = (preflight.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
    log(`CORS preflight: ${preflight.status}, Access-Control-Allow-Headers: ${preflight.headers.get('access-control-allow-headers')}`);
    const missing = wanted.filter((h) => !allowed.includes(h) && !(h !== 'authorization' && allowed.includes('*')));
    assert.deepEqual(missing, [], `the host's CORS preflight allows every header OvenLiveKit's WHIP POST carries (missing: ${missing.join(', ')}): else the browser never sends the POST`);
    const p1 = await Publisher.open(browser, 'P1');
    await p1.publish(url, bearer);
    const sending = await p1.sends();
    const [post] = await p1.http();
    assert.deepEqual([post.method, post.status], ['POST', 201], "P1's offer: 201 Created");
    assert.match(post.location ?? '', /^\/live\/cam2\/[0-9a-f]+\?direction=whip$/, 'the Location names the resource');
    assert.deepEqual((await p1.olk()).errors, [], 'no OvenLiveKit error');
    log(`P1: POST ${post.status}, Location ${post.location}, sends ${sending.codec}`);

    const v = await Viewer.open(browser, 'V', 'ovenplayer-0.10.54', DESKTOP_CHROME, 'live/cam2');
    await v.playing(60, 20000);
    assert.ok((await host.egress(await v.sessionId())) > 50000, 'the edge serves V');

    // The name is taken: a second publisher gets 409, whatever it sends.
    const p2 = await Publisher.open(browser, 'P2');
    await p2.publish(url, bearer);
    assert.deepEqual(await p2.refused(), ['Failed to fetch 409'], "P2's OvenLiveKit error callback");
    log(`P2 (same name): OvenLiveKit error callback "Failed to fetch 409"`);
    const offer = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n';
    for (const [what, headers, status] of [
      ['no token', {}, 401],
      ['a wrong token', { Authorization: `Bearer not-${token}` }, 403],
      ['the token (the name is taken)', { Authorization: `Bearer ${token}` }, 409],
    ]) {
      const response = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...headers }, body: offer });
      const text = (await response.text()).trim();
      assert.equal(response.status, status, `POST with ${what}: ${status} (${text})`);
      log(`POST from node with ${what}: ${response.status} "${text}"`);
    }
    await v.playing(30);

    // P1 stops: OvenLiveKit closes its connection and DELETEs the resource; the stream ends.
    const stoppedAt = Date.now();
    await p1.stop();
    const del = await waitFor("P1's DELETE", 5000, async () => (await p1.http()).find((h) => h.method === 'DELETE'));
    assert.equal(del.status, 200, 'DELETE on the resource: 200');
    assert.equal(new URL(del.url).pathname + new URL(del.url).search, post.location, 'the DELETE goes to the Location');
    await streamEnded(v, 'live/cam2', stoppedAt, "P1's stopStreaming()");

    // The name is free again.
    await p2.publish(url, bearer);
    await p2.sends();
    assert.equal((await p2.http()).at(-1).status, 201, "P2's second offer: 201");
    const w = await Viewer.open(browser, 'W', 'ovenplayer-0.10.54', DESKTOP_CHROME, 'live/cam2');
    await w.playing(60, 20000);

    // P2's page closes without a DELETE: the host notices the connection is gone.
    const closedAt = Date.now();
    await p2.close();
    const ended = await streamEnded(w, 'live/cam2', closedAt, "P2's page closed (no DELETE)", 60000);
    log(`WHIP_GONE_MS ${ended.at - closedAt} (a WHIP publisher's page closed without DELETE -> its viewer told the stream ended)`);
  },

  /**
   * P2P on a published stream: OvenLiveKit publishes `live/p2p` over OME's signalling; OvenPlayer
   * 0.10.38 viewers: A (desktop Windows Chrome) plays from the edge and relays to B and C (Linux
   * Chrome: clients only), whom the edge sends nothing; A leaves, both play from the edge again.
   * The publisher is never part of P2P (never asked to relay).
   */
  async 'olk-p2p'(host, browser) {
    const p = await Publisher.open(browser, 'P');
    await p.publish(`ws://${ADDR}:${PORT}/live/p2p?direction=send&token=${configuredPublishToken()}`);
    await p.sends();
    await relaysAndFallsBack(host, browser, 'live/p2p', LINUX_CHROME);
    const toPublisher = [...new Set((await p.signals()).map((m) => m.command))];
    assert.deepEqual(toPublisher, ['offer'], `the publisher got its offer and nothing else (got ${toPublisher.join(', ')})`);
    log(`P sends ${JSON.stringify(await p.sending())}`);
  },

  /**
   * The host's own page publishes (WHIP with plain fetch): tab P (`/?stream=live/page`) with a
   * wrong token says the host refused it (403); with the token it publishes Chromium's fake camera
   * and says it is connected. Two more tabs of the page play `live/page` from the edge. P stops:
   * its DELETE gets 200 and both viewers are told the stream ended. Then a tab whose camera is
   * missing (getUserMedia rejects) publishes its canvas test pattern to `live/pattern`, and a tab
   * plays that.
   */
  async 'page-publish'(host, browser) {
    const token = configuredPublishToken();
    const text = (v, id) => v.page.evaluate((i) => document.getElementById(i).textContent, id);
    /** Sets the page's token and presses its Publish (or Stop publishing) button. */
    const press = async (v, withToken) => {
      await v.page.fill('#token', withToken);
      await v.page.click('#publish');
    };
    const says = (v, id, what, ms, test) => waitFor(`${v.name}'s page to say ${what}`, ms, async () => {
      const shown = await text(v, id);
      return test(shown) ? shown : null;
    });

    const p = await Viewer.open(browser, 'P', 'own', DESKTOP_CHROME, 'live/page');
    await press(p, `not-${token}`);
    log(`P with a wrong token: "${await says(p, 'publishing', 'the host refused it', 10000, (t) => t.startsWith('Publishing failed: 403'))}"`);
    await press(p, token);
    log(`P: "${await says(p, 'publishing', 'it publishes the camera, connected', 15000, (t) => t === 'Publishing the camera to live/page: connected.')}"`);
    assert.equal(await text(p, 'publish'), 'Stop publishing', "P's button now stops publishing");

    const viewers = [];
    for (const name of ['V1', 'V2']) {
      const v = await Viewer.open(browser, name, 'own', DESKTOP_CHROME, 'live/page');
      await playsFromEdge(host, v);
      await says(v, 'source', 'it plays from the edge', 5000, (t) => t === 'the edge');
      viewers.push(v);
    }

    const stoppedAt = Date.now();
    await p.page.click('#publish');
    log(`P: "${await says(p, 'publishing', 'its DELETE got 200', 5000, (t) => t === 'Not publishing (DELETE: 200).')}"`);
    for (const v of viewers) {
      const ended = await waitFor(`${v.name} to be told live/page ended`, 10000, async () => (await v.signals()).find((m) => m.code !== undefined && m.at >= stoppedAt));
      assert.deepEqual([ended.code, ended.error], [404, 'stream live/page stopped'], `${v.name}'s error message`);
      const status = await says(v, 'status', 'the stream ended', 5000, (t) => t.includes('error 404: stream live/page stopped'));
      log(`${v.name}: +${ended.at - stoppedAt} ms after P stopped: "${status.replace(/\n/g, ' / ')}"`);
    }

    // No camera: the page publishes its test pattern instead.
    const q = await Viewer.open(browser, 'Q', 'own', DESKTOP_CHROME, 'live/pattern');
    await q.page.evaluate(() => { navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no camera here', 'NotFoundError')); });
    await press(q, token);
    log(`Q (no camera): "${await says(q, 'publishing', 'it publishes its test pattern, connected', 15000, (t) => t === 'Publishing a test pattern (no camera) to live/pattern: connected.')}"`);
    const w = await Viewer.open(browser, 'W', 'own', DESKTOP_CHROME, 'live/pattern');
    await playsFromEdge(host, w);
  },

  /**
   * Join time on a published stream (issue 12, item 5). OvenLiveKit publishes `live/keys` over OME's
   * signalling; Chrome's encoder sends a keyframe only when asked, so once the keyframe cache has
   * aged out (its MaxAge, 10 s by default) a joining viewer finds it empty and the host must ask the
   * publisher for one (RTCP PLI). Three rounds: 15 s after the last keyframe, an OvenPlayer 0.10.54
   * viewer joins (the host asks: `ingest_keyframe_requests` grows, the publisher counts a PLI and
   * encodes a keyframe); right after it, a second viewer joins from the fresh cache. Logs
   * `JOIN_MS` (the page's request_offer -> its first presented frame, requestVideoFrameCallback)
   * for both kinds.
   */
  async 'olk-join'(host, browser) {
    const token = configuredPublishToken();
    const p = await Publisher.open(browser, 'P');
    await p.publish(`ws://${ADDR}:${PORT}/live/keys?direction=send&token=${token}`);
    await p.sends();
    /** One viewer joins, plays 30 frames and leaves: its join time and what it cost the source. */
    const join = async (name) => {
      const [before, metrics] = [await p.sending(), (await host.stats()).metrics];
      const v = await Viewer.open(browser, name, 'ovenplayer-0.10.54', DESKTOP_CHROME, 'live/keys');
      await v.playing(30, 20000);
      const asked = (await v.sent()).find((m) => m.command === 'request_offer');
      const offer = (await v.signals()).find((m) => m.command === 'offer');
      const first = (await v.frameTimes())[0];
      const after = await p.sending();
      const now = (await host.stats()).metrics;
      const delta = (key) => (now[key] ?? 0) - (metrics[key] ?? 0);
      const sample = {
        join: first - asked.at, offer: offer.at - asked.at,
        hostAsked: delta('ingest_keyframe_requests'), cacheJoins: delta('edge_keyframe_cache_joins'),
        plis: after.plis - before.plis, keyframes: after.keyframes - before.keyframes,
      };
      await v.close();
      log(`${name}: request_offer -> offer ${sample.offer} ms -> first frame ${sample.join} ms; host keyframe requests +${sample.hostAsked}, cache joins +${sample.cacheJoins}; publisher PLIs +${sample.plis}, keyframes +${sample.keyframes}`);
      return sample;
    };
    const [pli, cached] = [[], []];
    let lastKeyframeAt = Date.now();
    for (let round = 1; round <= 3; round += 1) {
      await sleep(Math.max(0, lastKeyframeAt + 15000 - Date.now()));
      const cold = await join(`cold${round}`);
      lastKeyframeAt = Date.now();
      assert.ok(cold.hostAsked >= 1, `cold${round}: the host asked the publisher for a keyframe (ingest_keyframe_requests)`);
      assert.ok(cold.plis >= 1 && cold.keyframes >= 1, `cold${round}: the publisher got a PLI and sent a keyframe`);
      pli.push(cold.join);
      const warm = await join(`warm${round}`);
      assert.ok(warm.cacheJoins >= 1, `warm${round} started from the keyframe cache`);
      cached.push(warm.join);
    }
    log(`JOIN_MS ${pli.join(' ')} (15 s after the last keyframe: the host asks the publisher, PLI)`);
    log(`JOIN_MS_CACHE ${cached.join(' ')} (from the keyframe cache)`);
    log(`metrics: ingest_keyframe_requests ${await host.metric('ingest_keyframe_requests')}, edge_keyframe_cache_joins ${await host.metric('edge_keyframe_cache_joins')}; publisher ${JSON.stringify(await p.sending())}`);
  },

  /**
   * The live P2P page (/p2p, updated by Server-Sent Events) behind the API's access token, from
   * the namespace's address (not loopback): plain requests without credentials or with wrong ones
   * get 401 and a Basic challenge; a browser context with the token as HTTP Basic credentials
   * (OME's `user:password` form) gets the page. Opened before anyone plays; OvenPlayer 0.10.38
   * viewers join: A (desktop Windows Chrome: a host), then B and C (Linux Chrome: clients only).
   * The page shows A alone under the edge, relaying to two, and B and C under A, connected. A's
   * page closes: the page shows B and C under the edge and A gone, by push (its update count grew,
   * the document was never reloaded). Logs how long that took (`TREE_UPDATE_MS`) and how long the
   * figures above the tree (from the stats book's once-a-second sample) still counted A
   * (`SESSION_COUNT_MS`), and saves a screenshot of each state in RESULTS_DIR (p2p-tree.png,
   * p2p-tree-after.png).
   */
  async 'p2p-tree'(host, browser) {
    const STREAM = 'app/stream';
    const token = configuredAccessToken();
    assert.ok(token?.includes(':'), 'HOST_CONFIG configures <Managers><API><AccessToken> in the form user:password');
    const [username, password] = [token.slice(0, token.indexOf(':')), token.slice(token.indexOf(':') + 1)];
    const pageUrl = `http://${ADDR}:${PORT}/p2p`;
    const basic = (text) => ({ Authorization: `Basic ${Buffer.from(text).toString('base64')}` });
    for (const [url, what, headers] of [
      [pageUrl, 'no credentials', {}],
      [pageUrl, 'wrong credentials', basic(`${username}:not-${password}`)],
      [`${pageUrl}/events`, 'no credentials', {}],
      [`${pageUrl}/events`, 'wrong credentials', basic(`${username}:not-${password}`)],
    ]) {
      const response = await fetch(url, { headers });
      await response.body?.cancel();
      assert.equal(response.status, 401, `${url} with ${what}: 401`);
      assert.match(response.headers.get('www-authenticate') ?? '', /^Basic /i, `${url} with ${what}: a Basic challenge`);
    }
    const allowed = await fetch(pageUrl, { headers: basic(token) });
    assert.equal(allowed.status, 200, `${pageUrl} with the token: 200`);
    assert.match(await allowed.text(), /<section|EventSource/, 'the token gets the P2P page');
    log(`${pageUrl} from ${ADDR}: 401 without credentials and with wrong ones (the page and its events), 200 with the token`);

    // The P2P page, in a browser context of its own holding the token as HTTP Basic credentials.
    const context = await browser.newContext({ httpCredentials: { username, password }, viewport: { width: 900, height: 480 } });
    const tree = await context.newPage();
    tree.on('pageerror', (e) => log(`/p2p page error: ${e.message}`));
    if (env.BROWSER_ECHO) tree.on('console', (m) => log(`/p2p console: ${m.text()}`));
    let documents = 0;
    tree.on('framenavigated', (frame) => { if (frame === tree.mainFrame()) documents += 1; });
    await tree.addInitScript(SHOWN_TREE);
    const opened = await tree.goto(pageUrl);
    assert.equal(opened.status(), 200, 'the browser gets /p2p with the credentials');
    const updates = () => tree.evaluate(() => Number(document.body.dataset.updates ?? 0));
    await waitFor('the /p2p page to get its first update', 10000, async () => (await updates()) > 0);
    await tree.evaluate(() => { window.__sameDocument = true; });
    const shown = () => tree.evaluate((stream) => window.__shownTree(stream), STREAM);
    assert.deepEqual(await shown(), [], 'before anyone plays: the edge alone');
    log(`/p2p opened with the credentials (update ${await updates()}): the edge, no viewer`);
    /** Polls the page until `test(tree)` holds; fails with the last tree shown. */
    const pageShows = async (what, ms, test) => {
      let last;
      try {
        return await waitFor(what, ms, async () => { last = await shown(); return test(last) ? last : null; });
      } catch (e) {
        throw new Error(`${e.message}; the page shows ${JSON.stringify(last)}`);
      }
    };

    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.38');
    await a.playing();
    const aId = await a.sessionId();
    const clients = [await Viewer.open(browser, 'B', 'ovenplayer-0.10.38', LINUX_CHROME), await Viewer.open(browser, 'C', 'ovenplayer-0.10.38', LINUX_CHROME)];
    for (const v of clients) {
      const offer = await waitFor(`${v.name}'s offer`, 15000, async () => (await v.signals()).find((s) => s.command === 'offer'));
      assert.equal(offer.peer_id, aId, `${v.name}'s offer comes from host peer A`);
      await v.playing();
      assert.deepEqual(await v.p2pMode(), [true], `${v.name}: p2pMode true`);
    }
    const [A, B, C] = [aId, await clients[0].sessionId(), await clients[1].sessionId()].map(String);
    const before = await pageShows('the /p2p page to show A alone under the edge relaying to B and C, all connected', 20000, (t) =>
      t?.length === 1 && t[0].id === A && t[0].upstream === '0' && t[0].connected === 'true' && t[0].clients === '2'
      && JSON.stringify(idsOf(t[0].fed)) === JSON.stringify([B, C].sort())
      && t[0].fed.every((v) => v.upstream === A && v.connected === 'true' && v.clients === '0' && v.fed.length === 0));
    assert.deepEqual(before.flatMap((v) => [v.id, ...v.fed.map((w) => w.id)]).sort(), [A, B, C].sort(), 'nobody else is shown');
    const section = () => tree.evaluate((stream) => [...document.querySelectorAll('section')].find((s) => s.dataset.stream === stream).innerText.replace(/\n+/g, ' | '), STREAM);
    log(`/p2p (update ${await updates()}): ${await section()}`);
    mkdirSync(RESULTS_DIR, { recursive: true });
    await tree.screenshot({ path: path.join(RESULTS_DIR, 'p2p-tree.png'), fullPage: true });
    log(`saved ${path.join(RESULTS_DIR, 'p2p-tree.png')}`);

    // A leaves. The page stamps when each stage first shows (checked at every change of its DOM).
    const STAGES = {
      shown: 'B and C directly under the edge, A gone',
      upstream: 'B and C on the edge (data-upstream 0)',
      connected: 'B and C connected to the edge',
    };
    await tree.evaluate(([stream, a, bc]) => {
      window.__stageAt = {};
      window.__shownSince = [];
      /** `id<-upstream` for every viewer shown, `?` after a viewer not connected yet. */
      const flatten = (nodes) => nodes.flatMap((v) => [`${v.id}<-${v.upstream}${v.connected === 'true' ? '' : '?'}`, ...flatten(v.fed)]);
      const check = () => {
        const t = window.__shownTree(stream);
        const flat = JSON.stringify(flatten(t ?? []));
        if (window.__shownSince.at(-1)?.flat !== flat) window.__shownSince.push({ at: Date.now(), flat });
        const shown = t !== null && JSON.stringify(t.map((v) => v.id).sort()) === JSON.stringify(bc) && !t.some((v) => v.fed.length > 0)
          && ![...document.querySelectorAll('li.viewer')].some((li) => li.dataset.id === a);
        const upstream = shown && t.every((v) => v.upstream === '0');
        const connected = upstream && t.every((v) => v.connected === 'true');
        const section = [...document.querySelectorAll('section')].find((s) => s.dataset.stream === stream);
        const counted = shown && (section.querySelector('.figures')?.textContent ?? '').startsWith(`${bc.length} session(s)`);
        for (const [stage, holds] of Object.entries({ shown, upstream, connected, counted })) {
          if (holds && !(stage in window.__stageAt)) window.__stageAt[stage] = Date.now();
        }
      };
      new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true });
      check();
    }, [STREAM, A, [B, C].sort()]);
    assert.deepEqual(await tree.evaluate(() => window.__stageAt), {}, 'no stage shows while A is there');
    const updatesBefore = await updates();
    const closedAt = Date.now();
    await a.close();
    const at = {};
    for (const [stage, what] of Object.entries(STAGES)) {
      try {
        at[stage] = await waitFor(`the /p2p page to show ${what}`, 20000, () => tree.evaluate((s) => window.__stageAt[s] ?? null, stage));
      } catch (e) {
        throw new Error(`${e.message}; it shows ${JSON.stringify(await shown())}`);
      }
    }
    log(`/p2p (update ${await updates()}): ${await section()}`);
    const history = await tree.evaluate(() => window.__shownSince);
    log(`the trees shown (viewer<-upstream, ? not connected): ${history.map((h) => `${h.at - closedAt >= 0 ? '+' : ''}${h.at - closedAt} ms ${h.flat}`).join('; ')}`);
    log(`TREE_UPDATE_MS ${at.shown - closedAt} (A's page closed -> the /p2p page shows B and C under the edge, A gone); data-upstream 0 at +${at.upstream - closedAt} ms, both connected to the edge at +${at.connected - closedAt} ms`);
    assert.ok((await updates()) > updatesBefore, `the page was updated by push (updates ${updatesBefore} -> ${await updates()})`);
    assert.equal(documents, 1, 'the /p2p page was never reloaded or navigated');
    assert.equal(await tree.evaluate(() => window.__sameDocument), true, 'the /p2p page is the document first loaded');
    for (const v of clients) {
      await waitFor(`${v.name}'s edge offer`, 10000, async () => (await v.signals()).some((s) => s.command === 'offer' && s.peer_id === 0));
      await v.playing(30, 30000);
    }
    // The figures above the tree come from the stats book's once-a-second sample (the tree is
    // live): the session count may say 3 until the next sample is pushed.
    const countedAt = await waitFor("the /p2p page's figures to count 2 sessions", 10000, () => tree.evaluate(() => window.__stageAt.counted ?? null));
    log(`SESSION_COUNT_MS ${countedAt - closedAt} (A's page closed -> the figures above the tree say 2 session(s))`);
    const after = await shown();
    assert.deepEqual(idsOf(after), [B, C].sort(), 'B and C stay under the edge');
    assert.ok(after.every((v) => v.upstream === '0' && v.connected === 'true' && v.clients === '0'), `B and C play from the edge: ${JSON.stringify(after)}`);
    await tree.screenshot({ path: path.join(RESULTS_DIR, 'p2p-tree-after.png'), fullPage: true });
    log(`saved ${path.join(RESULTS_DIR, 'p2p-tree-after.png')}`);
    await context.close();
  },
};

// ---------------------------------------------------------------------------------------------

await runScenario('scenario.mjs', scenarios, () => new Host(), CHROMIUM_ARGS, { cleanup: () => pagesServer?.close() });
