// What every browser script here shares: the User-Agents the classification rules need, how
// Chromium is started, the log, sleep and polling helpers, what the pages record of themselves
// (init scripts), the OvenPlayer page, how a scenario script runs, and what the scripts behind
// home routers measure with. Importing it runs nothing.

import { chromium } from 'playwright-core';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A desktop Windows Chrome: host-eligible under the classification rules (headless is not). */
export const DESKTOP_CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';
/** Chrome on desktop Linux: never a host (OS Linux), but the same browser kind as DESKTOP_CHROME,
 *  so it may be a client of a DESKTOP_CHROME host. */
export const LINUX_CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';

/** Headless Chromium for WebRTC on loopback and namespace addresses, playing without a gesture. */
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required',
];

/** When the script started (the log's zero). */
export const started = Date.now();
/** Prints `line` with the seconds since the script started. */
export const log = (line) => console.log(stamped(line));
/** `log` on stderr: for scripts whose stdout is their report. */
export const progress = (line) => console.error(stamped(line));
const stamped = (line) => `[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` every 50 ms until it returns a truthy value; fails naming `what` after `ms`. */
export async function waitFor(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** Polls `probe` every 100 ms until it returns a truthy value or `ms` pass (then null). */
export async function within(ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) return null;
    await sleep(100);
  }
}

/** Chromium (`CHROMIUM`, else Debian's) started with `args`. */
export const launchChromium = (args = CHROMIUM_ARGS) => chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args });

/**
 * Runs the scenario the command line names, one of `scenarios` (`name: async (host, browser)`),
 * of the script `script`: the host `newHost()` makes (`ready()`, `stop()`, `log`) and one Chromium
 * started with `args`. Prints `scenario NAME: passed`, or its failure (then `onFailure(browser)`
 * and the host's log, also with HOST_ECHO=1); `cleanup()` runs at the end. Exits 0 when it passed.
 */
export async function runScenario(script, scenarios, newHost, args, { onFailure, cleanup } = {}) {
  const name = process.argv[2];
  if (!scenarios[name]) {
    console.error(`usage: node ${script} <${Object.keys(scenarios).join('|')}>`);
    process.exit(2);
  }
  const host = newHost();
  let browser;
  let failed = false;
  try {
    await host.ready();
    browser = await launchChromium(args);
    log(`scenario ${name}: Chromium ${browser.version()}`);
    await scenarios[name](host, browser);
    log(`scenario ${name}: passed`);
  } catch (e) {
    failed = true;
    console.error(`scenario ${name} FAILED: ${e.stack ?? e}`);
    await onFailure?.(browser);
  } finally {
    await browser?.close().catch(() => {});
    cleanup?.();
    host.stop();
    if (failed || process.env.HOST_ECHO) console.error(`--- host log ---\n${host.log}`);
    process.exit(failed ? 1 : 0);
  }
}

/** The script of OvenPlayer `version` (an npm package here: `ovenplayer-VERSION`). */
export const ovenplayerScript = (version) => readFileSync(path.join(here, 'node_modules', `ovenplayer-${version}`, 'dist', 'ovenplayer.js'));

/** An OvenPlayer page playing `wsUrl` (autoStart, muted) that records its `p2pMode` events
 *  (`window.__p2pMode`, as `{at, on}`) and its errors (`window.__errors`). */
export const recordingPlayerPage = (wsUrl) => `<!doctype html><html><body>
<div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>
  window.__errors = [];
  const player = OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }] });
  player.on('p2pMode', (on) => window.__p2pMode.push({ at: Date.now(), on }));
  player.on('error', (e) => window.__errors.push(JSON.stringify(e)));
</script></body></html>`;

/** Answers `page`'s requests to http://player.test/: `script` at /ovenplayer.js, `html` elsewhere. */
export async function servePlayer(page, script, html) {
  await page.route('http://player.test/**', (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/ovenplayer.js') return route.fulfill({ body: script, contentType: 'text/javascript' });
    return route.fulfill({ body: html, contentType: 'text/html' });
  });
}

// ---------------------------------------------------------------------------------------------
// Page init scripts (`page.addInitScript(SCRIPT, arg)`): each runs in the page, alone

/**
 * Records every signalling message the page receives (`window.__signals`: `{at, command, id,
 * peer_id, code, error}`; with `withCandidates`, an `offer`'s or `candidate`'s ICE candidates too,
 * from its `candidates` and its SDP's `a=candidate` lines) and every one it sends
 * (`window.__sent`: `{at, command, id, peer_id}`). `window.__offerPeer(sdp)`: the `peer_id` of
 * the offer that brought `sdp` (else of the last offer; 0 the edge).
 */
export const RECORD_SIGNALLING = (withCandidates) => {
  window.__signals = [];
  window.__sent = [];
  const offerPeers = new Map();
  let lastOfferPeer = null;
  window.__offerPeer = (sdp) => (offerPeers.has(sdp) ? offerPeers.get(sdp) : lastOfferPeer);
  const candidatesOf = (m, sdp) => [
    ...(Array.isArray(m.candidates) ? m.candidates : []).map((c) => String(c?.candidate ?? c)),
    ...sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2)),
  ].filter((c) => c !== '');
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    send(data) {
      try {
        const m = JSON.parse(data);
        window.__sent.push({ at: Date.now(), command: m.command, id: m.id, peer_id: m.peer_id });
      } catch { /* not JSON */ }
      return super.send(data);
    }
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try {
          const m = JSON.parse(e.data);
          const signal = { at: Date.now(), command: m.command, id: m.id, peer_id: m.peer_id, code: m.code, error: m.error };
          if (m.command === 'offer' || m.command === 'candidate') {
            const sdp = typeof m.sdp === 'string' ? m.sdp : String(m.sdp?.sdp ?? '');
            if (withCandidates) signal.candidates = candidatesOf(m, sdp);
            if (m.command === 'offer') {
              offerPeers.set(sdp, m.peer_id);
              lastOfferPeer = m.peer_id;
            }
          }
          window.__signals.push(signal);
        } catch { /* not JSON: the player reports it */ }
      });
    }
  };
};

/**
 * Records every RTCPeerConnection (`window.__pcs`: `{pc, record}`; `pc.__record`), after
 * RECORD_SIGNALLING: a receiving one (given an offer) tagged with the `peer_id` of that offer (0
 * the edge, else the host peer), one given an answer a relay to a client (`record.role`, `.peer`).
 * Samples each open receiving connection's decoded video frames (getStats) every 100 ms:
 * `record.frames`, `.firstFrameAt`, `.lastGrowthAt`. A later init script may set
 * `window.__onConnection(pc, record)`, called as each is made, and `window.__onSample(record,
 * stats, video)`, with each sample (`stats` the report's values, `video` its inbound video).
 */
export const TRACK_RECEIVERS = () => {
  window.__pcs = [];
  window.__onConnection = () => {};
  window.__onSample = () => {};
  const NativePc = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePc {
    constructor(...args) {
      super(...args);
      const record = { createdAt: Date.now(), role: null, peer: null, frames: 0, firstFrameAt: null, lastGrowthAt: null };
      this.__record = record;
      window.__pcs.push({ pc: this, record });
      window.__onConnection(this, record);
    }
    setRemoteDescription(description, ...rest) {
      if (description?.type === 'offer') {
        this.__record.role = 'receive';
        this.__record.peer = window.__offerPeer(description.sdp);
      } else if (description?.type === 'answer') {
        this.__record.role = 'relay';
      }
      return super.setRemoteDescription(description, ...rest);
    }
  };
  setInterval(async () => {
    for (const { pc, record } of window.__pcs) {
      if (record.role !== 'receive' || pc.connectionState === 'closed') continue;
      try {
        const stats = [...(await pc.getStats()).values()];
        const video = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
        const frames = video?.framesDecoded ?? 0;
        if (frames > record.frames) {
          record.lastGrowthAt = Date.now();
          record.firstFrameAt ??= Date.now();
        }
        record.frames = frames;
        window.__onSample(record, stats, video);
      } catch { /* closing */ }
    }
  }, 100);
};

/**
 * Calls `window.__onFrame(video, now, metadata)` for every frame any `<video>` presents
 * (requestVideoFrameCallback; the player makes its elements later: each is hooked as it appears,
 * and stays hooked across `srcObject` changes). By default that records when (Date.now()) in
 * `window.__frameTimes`; a later init script may replace `window.__onFrame`. New elements are
 * looked for every `everyMs` (the script's argument; 20 when none).
 */
export const TIME_FRAMES = (everyMs = 20) => {
  window.__frameTimes = [];
  window.__onFrame = () => window.__frameTimes.push(Date.now());
  const onFrame = (video) => (now, metadata) => {
    window.__onFrame(video, now, metadata);
    video.requestVideoFrameCallback(onFrame(video));
  };
  setInterval(() => {
    for (const video of document.querySelectorAll('video')) {
      if (video.__timed || !video.requestVideoFrameCallback) continue;
      video.__timed = true;
      video.requestVideoFrameCallback(onFrame(video));
    }
  }, everyMs);
};

/**
 * Records every signalling message the page sends (`window.__sent`) and receives
 * (`window.__received`), whole, each with when (`at`), and the URL of its last WebSocket
 * (`window.__socketUrl`).
 */
export const RECORD_MESSAGES = () => {
  window.__sent = [];
  window.__received = [];
  const NativeSocket = window.WebSocket;
  window.WebSocket = class extends NativeSocket {
    constructor(...args) {
      super(...args);
      window.__socketUrl = String(args[0]);
      this.addEventListener('message', (e) => {
        try { window.__received.push({ at: Date.now(), ...JSON.parse(e.data) }); } catch { /* not JSON */ }
      });
    }
    send(data) {
      try { window.__sent.push({ at: Date.now(), ...JSON.parse(data) }); } catch { /* not JSON */ }
      return super.send(data);
    }
  };
};

// ---------------------------------------------------------------------------------------------
// Viewers behind home routers (nat.mjs, nat-player.mjs): one Chromium per LAN machine, in its
// namespace; one JSON report on stdout

/** One LAN machine: its own Chromium (`executablePath`: a wrapper running it in the machine's
 *  namespace) and one page (`this.page`, which a subclass's `open` makes). */
export class LanMachine {
  static async launch(name, executablePath, args) {
    const browser = await chromium.launch({ executablePath, args });
    return Object.assign(new this(), { name, browser });
  }
  report() { return this.page.evaluate(() => window.__report()); }
  async close() { await this.browser.close().catch(() => {}); }
}

/** The host's /metrics (its text), read on loopback (`apiPort`) from inside its namespace `ns`. */
export function namespaceMetrics(ns, apiPort) {
  const fetchIt = `fetch('http://127.0.0.1:${apiPort}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t)).catch((e) => { console.error(String(e)); process.exit(1); })`;
  const run = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', fetchIt], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`reading /metrics in ${ns}: ${run.stderr}`);
  return run.stdout;
}

/** The longest time without a frame among `frameTimes` (sorted, none after `until`), the wait
 *  from the last one to `until` included; null without frames. */
export function longestGap(frameTimes, until) {
  let maxGap = null;
  for (let i = 1; i < frameTimes.length; i += 1) maxGap = Math.max(maxGap ?? 0, frameTimes[i] - frameTimes[i - 1]);
  if (frameTimes.length > 0) maxGap = Math.max(maxGap ?? 0, until - frameTimes.at(-1));
  return maxGap;
}

/** A page's figures of delivery: the signalling commands it `sent` (`command xN, ...`), and the
 *  frames its `receiving` connections decoded from peers and from the edge (`peer` 0). */
export const deliveryFigures = (sent, receiving) => ({
  sent: Object.entries(sent.reduce((n, s) => ({ ...n, [s.command]: (n[s.command] ?? 0) + 1 }), {})).map(([c, n]) => `${c} x${n}`).join(', '),
  frames_from_peers: receiving.filter((p) => p.peer !== 0 && p.peer !== null).reduce((n, p) => n + p.frames, 0),
  frames_from_edge: receiving.filter((p) => p.peer === 0).reduce((n, p) => n + p.frames, 0),
});

/**
 * What each of `machines` plays from (`look(report, now)`) just before and just after
 * `readMetrics()`: `{metrics, before, after, fromPeers, playing}`, `fromPeers(sources)` counting
 * those that play from a peer (`isPeer(source)`), `playing` that count when it is the same before
 * and after (else null).
 */
export async function aroundMetrics(machines, look, readMetrics, isPeer) {
  const sources = async () => {
    const now = Date.now();
    const entries = await Promise.all(Object.values(machines).map(async (m) => [m.name, look(await m.report(), now)]));
    return Object.fromEntries(entries);
  };
  const before = await sources();
  const metrics = readMetrics();
  const after = await sources();
  const fromPeers = (s) => Object.values(s).filter(isPeer).length;
  return { metrics, before, after, fromPeers, playing: fromPeers(before) === fromPeers(after) ? fromPeers(after) : null };
}

/**
 * Runs `body(step, machines)`, a measurement filling `result` (with `steps: []`): `step(text)`
 * logs on stderr and records `{at_ms, text}`; what `body` puts in `machines` (`LanMachine`s) is
 * closed at the end. Prints `result` as one JSON line on stdout (a failure in `error`), then exits:
 * non-zero when `body` threw.
 */
export async function measure(result, body) {
  const step = (text) => { progress(text); result.steps.push({ at_ms: Date.now() - started, text }); };
  const machines = {};
  let failed = null;
  try {
    await body(step, machines);
  } catch (e) {
    failed = e;
    result.error = String(e.stack ?? e);
    progress(`FAILED: ${result.error}`);
  } finally {
    await Promise.all(Object.values(machines).map((m) => m.close()));
  }
  console.log(JSON.stringify(result));
  process.exit(failed ? 1 : 0);
}
