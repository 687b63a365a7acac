// Deeper trees (issue 25) in real Chromium with the real OvenPlayer 0.10.38: seven pages (desktop
// Windows Chrome, autoStart: true) at k = 2 and <MaxDepth>2</MaxDepth>, joining one after another
// under <PairNewViewers>any</PairNewViewers> so that the tree forms deterministically: R on the
// edge, A and B from R, then C, D, E, F from A and B. Then:
//   (a) a middle relay (the source of the first depth-2 page) closes its page: its clients must
//       play again, nobody frozen;
//   (b) the root closes its page: everyone must play again (from the edge or re-paired).
// Measured: from each close to each affected page's first new frame (the first frame it presents
// after the offer that followed the close; requestVideoFrameCallback), the longest frame gap of
// every page, and the glass-to-glass delay each hop adds (the same picture's presentation time at
// a page and at its source, matched by a 32x18 grey thumbnail of each presented frame: the
// built-in clip is testsrc2, every frame differs).
//
// Run by tests/tests/trees.rs inside a private network namespace (192.0.2.1 on a veth pair). It
// measures and reports, the Rust test judges: one JSON object on stdout (the last line); progress
// on stderr. Exits non-zero only when a step could not complete (the report then has `error`).
//
// Environment: HOST_BIN, HOST_CONFIG, HOST_PORT (signalling, 3333), API_PORT (/metrics, 8081),
// HOST_ADDR (192.0.2.1), HOST_LOG_FILE (where the host's log goes; RUST_LOG from HOST_RUST_LOG),
// CHROMIUM, ONE_CHROMIUM=1 (every context in one Chromium, to compare; see LAYOUT), BROWSER_ECHO=1.

import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import {
  DESKTOP_CHROME, RECORD_SIGNALLING, TIME_FRAMES, TRACK_RECEIVERS, launchChromium, progress as log, ovenplayerScript, recordingPlayerPage,
  servePlayer, sleep, started, waitFor,
} from './common.mjs';

const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
const API_PORT = env.API_PORT ?? '8081';
const ADDR = env.HOST_ADDR ?? '192.0.2.1';
const WS_URL = `ws://${ADDR}:${PORT}/app/stream`;
const NAMES = ['R', 'A', 'B', 'C', 'D', 'E', 'F'];
/**
 * Which Chromium process each page's context lives in: four processes (two cores carry no more),
 * the root and the two middle relays each alone (the pages that leave), the four leaves together.
 * A context closing slows the other contexts of its Chromium (one browser process carries their
 * WebSockets): seen with all seven in one, the leaving relay's clients got their `stop` 608 ms
 * after the close began and sent `request_offer` 300 ms after that (first new frame at 1.1 s);
 * with the leaving page alone, `stop` came after 80-230 ms and `request_offer` 30 ms after it.
 * That would be measured as the plugin's failover; on the internet each viewer has its own
 * machine. ONE_CHROMIUM=1 puts all seven in one process, to compare.
 */
const LAYOUT = env.ONE_CHROMIUM === '1' ? [0, 0, 0, 0, 0, 0, 0] : [0, 1, 2, 3, 3, 3, 3];
const BROWSERS = Math.max(...LAYOUT) + 1;

// ---------------------------------------------------------------------------------------------
// The page

/**
 * Installed in every page before OvenPlayer, after RECORD_SIGNALLING, TIME_FRAMES and
 * TRACK_RECEIVERS (every RTCPeerConnection, a receiving one's decoded video frames sampled every
 * 100 ms): when each connection's `close()` began and how long it blocked, every presented frame's
 * presentation time in `window.__frameTimes` and, while `window.__thumbs` is an array, a
 * thumbnail of each.
 */
const INSTRUMENT = () => {
  window.__p2pMode = [];
  window.__thumbs = null;
  window.__onConnection = (pc, record) => Object.assign(record, { closedAt: null, closeMs: null });
  const Tracked = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Tracked {
    /** How long the player's `close()` blocked the page (a relay closes a client's connection on
     *  its `stop`). */
    close() {
      const from = performance.now();
      this.__record.closedAt ??= Date.now();
      try { return super.close(); } finally { this.__record.closeMs ??= Math.round(performance.now() - from); }
    }
  };
  const canvas = document.createElement('canvas');
  canvas.width = 32;
  canvas.height = 18;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  window.__onFrame = (video, now, meta) => {
    const at = performance.timeOrigin + meta.presentationTime;
    window.__frameTimes.push(at);
    if (Array.isArray(window.__thumbs)) {
      ctx.drawImage(video, 0, 0, 32, 18);
      const rgba = ctx.getImageData(0, 0, 32, 18).data;
      const grey = new Array(32 * 18);
      for (let i = 0; i < grey.length; i += 1) grey[i] = Math.round((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3);
      window.__thumbs.push({ at, grey });
    }
  };
  window.__report = () => ({
    signals: window.__signals,
    sent: window.__sent,
    frameTimes: window.__frameTimes,
    p2pMode: window.__p2pMode,
    errors: window.__errors ?? [],
    paused: [...document.querySelectorAll('video')].map((v) => v.paused),
    pcs: window.__pcs.map(({ pc, record }) => ({ ...record, closed: pc.connectionState === 'closed' })),
  });
};

const OVENPLAYER = ovenplayerScript('0.10.38');

/** One viewer: a browser context of its own, one page. */
class Viewer {
  static async open(browser, name) {
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const page = await context.newPage();
    const v = Object.assign(new Viewer(), { name, context, page, pageErrors: [], closedAt: null });
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => { v.pageErrors.push({ at: Date.now(), message: e.message }); log(`${name} page error: ${e.message}`); });
    await page.addInitScript(RECORD_SIGNALLING, false);
    await page.addInitScript(TIME_FRAMES);
    await page.addInitScript(TRACK_RECEIVERS);
    await page.addInitScript(INSTRUMENT);
    await servePlayer(page, OVENPLAYER, recordingPlayerPage(WS_URL));
    v.openedAt = Date.now();
    await page.goto('http://player.test/');
    log(`${name} opened its page`);
    return v;
  }
  report() { return this.page.evaluate(() => window.__report()); }
  async close() {
    this.closedAt = Date.now();
    await this.context.close();
    this.closeTook = Date.now() - this.closedAt;
    log(`${this.name} closed its page (${this.closeTook} ms)`);
  }
}

/** The session id (the `id` of the first offer), or null. */
const sessionOf = (report) => report.signals.find((s) => s.command === 'offer')?.id ?? null;
/** The peer the page last answered (0 the edge), or null before its first answer. */
const sourceOf = (report) => report.sent.filter((s) => s.command === 'answer').at(-1)?.peer_id ?? null;
/** The live receiving connection from `peer`, or undefined. */
const connectionFrom = (report, peer) => report.pcs.filter((p) => p.role === 'receive' && p.peer === peer && !p.closed).at(-1);

/** Waits until `v` decodes `count` frames over its live connection from the peer it answered. */
async function decodesFromSource(v, count, ms) {
  return waitFor(`${v.name} to decode ${count} frames from its source`, ms, async () => {
    const r = await v.report();
    const source = sourceOf(r);
    const pc = source === null ? undefined : connectionFrom(r, source);
    return pc && pc.frames >= count && Date.now() - pc.lastGrowthAt < 500 ? { source, frames: pc.frames } : null;
  });
}

// ---------------------------------------------------------------------------------------------
// The host

class Host {
  constructor() {
    this.out = env.HOST_LOG_FILE ? createWriteStream(env.HOST_LOG_FILE) : null;
    this.child = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], {
      env: { ...env, RUST_LOG: env.HOST_RUST_LOG ?? 'info,host::plugins=debug,webrtc=warn,rtc=warn', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const pipe of [this.child.stdout, this.child.stderr]) pipe.on('data', (d) => this.out?.write(d));
  }
  async ready() {
    await waitFor('the host to answer /stats', 20000, async () => {
      if (this.child.exitCode !== null) throw new Error(`the host exited (${this.child.exitCode})`);
      return fetch(`http://127.0.0.1:${PORT}/stats`).then((r) => r.ok, () => false);
    });
  }
  /** `/metrics` on the API port: viewers{app,stream,delivery}. */
  async viewers() {
    const text = await (await fetch(`http://127.0.0.1:${API_PORT}/metrics`)).text();
    const value = (delivery) => {
      const line = text.split('\n').find((l) => l.startsWith('viewers{') && l.includes('stream="stream"') && l.includes(`delivery="${delivery}"`));
      return line === undefined ? null : Number(line.trim().split(/\s+/).at(-1));
    };
    return { p2p: value('p2p'), edge: value('edge') };
  }
  /** The live tree of app/stream: the first event of `/p2p/events` (Server-Sent Events). */
  async tree() {
    const abort = new AbortController();
    const response = await fetch(`http://127.0.0.1:${PORT}/p2p/events`, { signal: abort.signal });
    const reader = response.body.getReader();
    let text = '';
    try {
      while (!text.includes('\n\n')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
    } finally {
      abort.abort();
    }
    const data = text.split('\n\n')[0].split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
    const stream = JSON.parse(data).streams.find((s) => s.name === 'app/stream');
    return stream?.viewers ?? [];
  }
  stop() { this.child.kill('SIGKILL'); }
}

/** Each viewer of `nodes` (the live tree's `{id, upstream, connected}`) with its depth (hops from
 *  the edge; null for a loop or a dangling upstream). */
function depths(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = (n, seen = new Set()) => {
    if (n.upstream === 0) return 0;
    const up = byId.get(n.upstream);
    if (!up || seen.has(n.id)) return null;
    seen.add(n.id);
    const d = depth(up, seen);
    return d === null ? null : d + 1;
  };
  return nodes.map((n) => ({ id: n.id, upstream: n.upstream, connected: n.connected, depth: depth(n) }));
}

// ---------------------------------------------------------------------------------------------
// Figures

/** The longest time without a presented frame in [from, to] (frames just before `from` count). */
function longestGap(frameTimes, from, to) {
  const times = frameTimes.filter((t) => t <= to);
  let last = times.filter((t) => t < from).at(-1) ?? from;
  let gap = { ms: 0, from: last };
  for (const t of times.filter((t) => t >= from)) {
    if (t - last > gap.ms) gap = { ms: t - last, from: last };
    last = t;
  }
  return to - last > gap.ms ? { ms: to - last, from: last } : gap;
}

/** The page's failover after a close at `closedAt`: its first offer after it, and its first
 *  presented frame after that offer (both in ms from the close), or nulls. */
function failover(report, closedAt) {
  const offer = report.signals.find((s) => s.command === 'offer' && s.at >= closedAt);
  const frame = offer ? report.frameTimes.find((t) => t >= offer.at) : undefined;
  return {
    stops: report.signals.filter((s) => s.command === 'stop' && s.at >= closedAt).map((s) => ({ at_ms: s.at - closedAt, peer_id: s.peer_id })),
    request_offer_ms: (() => { const r = report.sent.find((s) => s.command === 'request_offer' && s.at >= closedAt); return r ? r.at - closedAt : null; })(),
    offer_ms: offer ? offer.at - closedAt : null,
    offer_from: offer ? offer.peer_id : null,
    first_new_frame_ms: frame === undefined ? null : Math.round(frame - closedAt),
  };
}

const median = (xs) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * The delay a hop adds: for each frame the child presented, the parent's frame of the same picture
 * (least mean absolute difference of the thumbnails, among the parent's frames presented in the
 * 1.5 s before to 0.1 s after), kept when it is clearly the best (under half the median
 * difference of the candidates); the median of the child's time minus the parent's.
 */
function hopDelay(parentThumbs, childThumbs) {
  const delays = [];
  for (const c of childThumbs) {
    const candidates = parentThumbs.filter((p) => p.at >= c.at - 1500 && p.at <= c.at + 100);
    if (candidates.length < 5) continue;
    const scored = candidates.map((p) => ({ p, mad: p.grey.reduce((n, g, i) => n + Math.abs(g - c.grey[i]), 0) / p.grey.length }));
    scored.sort((x, y) => x.mad - y.mad);
    const typical = median(scored.map((s) => s.mad));
    if (scored[0].mad < 0.5 * typical) delays.push(c.at - scored[0].p.at);
  }
  return { matched: delays.length, of: childThumbs.length, median_ms: delays.length ? Math.round(median(delays)) : null };
}

// ---------------------------------------------------------------------------------------------

const result = { steps: [], chromium: null, browsers: BROWSERS, error: null };
const step = (text) => { log(text); result.steps.push({ at_ms: Date.now() - started, text }); };
const host = new Host();
const browsers = [];
const viewers = [];
let failed = false;
try {
  await host.ready();
  for (let i = 0; i < BROWSERS; i += 1) browsers.push(await launchChromium());
  result.chromium = browsers[0].version();
  step(`Chromium ${result.chromium}, ${BROWSERS} process(es) for seven contexts (${NAMES.map((n, i) => `${n}:${LAYOUT[i]}`).join(' ')})`);

  // The tree forms: one page after another, each once the one before decodes from its source.
  for (const [i, name] of NAMES.entries()) {
    const v = await Viewer.open(browsers[LAYOUT[i]], name);
    viewers.push(v);
    const { source, frames } = await decodesFromSource(v, 30, 20000);
    v.id = sessionOf(await v.report());
    step(`${name} (session ${v.id}) decodes from ${source === 0 ? 'the edge' : viewers.find((w) => w.id === source)?.name ?? source} (${frames} frames)`);
  }
  const nameOf = (id) => (id === 0 ? 'edge' : viewers.find((w) => w.id === id)?.name ?? String(id));
  const pagesFed = async (live) => Promise.all(live.map(async (v) => {
    const r = await v.report();
    const source = sourceOf(r);
    const pc = source === null ? undefined : connectionFrom(r, source);
    return { name: v.name, session: v.id, source, source_name: source === null ? null : nameOf(source), frames_from_source: pc?.frames ?? 0, decoding: pc !== undefined && Date.now() - pc.lastGrowthAt < 500, p2p_mode: r.p2pMode.map((m) => m.on) };
  }));

  // The host's view: six viewers on peers, depth 2.
  const formed = await waitFor('/metrics to count 6 viewers on peers and the live tree to show depth 2', 15000, async () => {
    const metrics = await host.viewers();
    const tree = depths(await host.tree());
    return metrics.p2p === 6 && tree.length === 7 && tree.every((n) => n.connected) && Math.max(...tree.map((n) => n.depth ?? 99)) === 2 ? { metrics, tree } : null;
  }).catch(async (e) => { result.metrics = await host.viewers(); result.live_tree = depths(await host.tree()); throw e; });
  await sleep(1000);
  result.formed = {
    metrics: formed.metrics,
    live_tree: formed.tree.map((n) => ({ ...n, name: nameOf(n.id), upstream_name: nameOf(n.upstream) })),
    pages: await pagesFed(viewers),
  };
  step(`tree: ${result.formed.pages.map((p) => `${p.name}<-${p.source_name}`).join(' ')}; /metrics viewers p2p ${formed.metrics.p2p}, edge ${formed.metrics.edge}; live tree depths ${result.formed.live_tree.map((n) => `${n.name}:${n.depth}`).join(' ')}`);

  // Glass-to-glass per hop: 3 s of thumbnails from every page, matched child against source.
  await Promise.all(viewers.map((v) => v.page.evaluate(() => { window.__thumbs = []; })));
  await sleep(3000);
  const thumbs = await Promise.all(viewers.map((v) => v.page.evaluate(() => { const t = window.__thumbs; window.__thumbs = null; return t; })));
  const depthOf = new Map(result.formed.live_tree.map((n) => [n.id, n.depth]));
  result.hops = [];
  for (const [i, v] of viewers.entries()) {
    const source = result.formed.pages[i].source;
    const parent = viewers.findIndex((w) => w.id === source);
    if (parent < 0) continue;
    result.hops.push({ from: viewers[parent].name, to: v.name, depth: depthOf.get(v.id), ...hopDelay(thumbs[parent], thumbs[i]) });
  }
  step(`delay added per hop (median, matched frames): ${result.hops.map((h) => `${h.from}->${h.to} ${h.median_ms} ms (${h.matched}/${h.of})`).join(', ')}`);

  /** Closes `leaving`'s page; returns each remaining page's figures once all play again. */
  const leave = async (leaving, what) => {
    const before = await pagesFed(viewers.filter((v) => !v.closedAt));
    const children = before.filter((p) => p.source === leaving.id).map((p) => p.name);
    const grandchildren = before.filter((p) => children.includes(nameOf(p.source))).map((p) => p.name);
    step(`${what}: ${leaving.name} leaves; its clients ${children.join(', ') || 'none'}, theirs ${grandchildren.join(', ') || 'none'}`);
    await leaving.close();
    const closedAt = leaving.closedAt;
    const live = viewers.filter((v) => !v.closedAt);
    // Everyone plays again: decodes from its (new) source, and presents frames after the close.
    await Promise.all(live.map((v) => decodesFromSource(v, 30, 15000)));
    await Promise.all(live.map((v) => waitFor(`${v.name} to present 30 frames after the close`, 15000, async () => (await v.report()).frameTimes.filter((t) => t > closedAt).length >= 30)));
    // Watch everyone a while (nobody frozen; moves that follow happen here).
    await sleep(3000);
    const end = Date.now();
    const pages = await pagesFed(live);
    const figures = await Promise.all(live.map(async (v, i) => {
      const r = await v.report();
      const recent = r.frameTimes.filter((t) => t > end - 1000 && t <= end).length;
      return {
        ...pages[i],
        role: children.includes(v.name) ? 'child' : grandchildren.includes(v.name) ? 'grandchild' : 'other',
        source_before: before.find((p) => p.name === v.name)?.source_name ?? null,
        ...failover(r, closedAt),
        ...(() => { const g = longestGap(r.frameTimes, closedAt, end); return { longest_gap_ms: Math.round(g.ms), longest_gap_from_ms: Math.round(g.from - closedAt) }; })(),
        connections_closed: r.pcs.filter((p) => p.closedAt !== null && p.closedAt >= closedAt).map((p) => ({ role: p.role, peer: p.peer, at_ms: p.closedAt - closedAt, blocked_ms: p.closeMs })),
        frames_last_second: recent,
        paused: r.paused,
        page_errors: v.pageErrors.filter((e) => e.at >= closedAt).map((e) => e.message),
        player_errors: r.errors,
      };
    }));
    const metrics = await host.viewers();
    const tree = depths(await host.tree());
    for (const f of figures) {
      step(`  ${f.name} (${f.role}, was on ${f.source_before}): stops ${JSON.stringify(f.stops.map((s) => nameOf(s.peer_id)))}, request_offer +${f.request_offer_ms ?? '-'} ms, offer from ${f.offer_from === null ? '-' : nameOf(f.offer_from)} +${f.offer_ms ?? '-'} ms, first new frame +${f.first_new_frame_ms ?? '-'} ms, longest gap ${f.longest_gap_ms} ms (from +${f.longest_gap_from_ms} ms), close() blocked ${JSON.stringify(f.connections_closed.map((c) => `${c.role}:${c.blocked_ms}ms@+${c.at_ms}`))}, now on ${f.source_name}, ${f.frames_last_second} frames in the last second`);
    }
    step(`  /metrics viewers p2p ${metrics.p2p}, edge ${metrics.edge}; live tree ${tree.map((n) => `${nameOf(n.id)}<-${nameOf(n.upstream)}:${n.depth}`).join(' ')}`);
    return { leaving: leaving.name, closed_at: new Date(closedAt).toISOString(), close_took_ms: leaving.closeTook, children, grandchildren, pages: figures, metrics, live_tree: tree.map((n) => ({ ...n, name: nameOf(n.id) })) };
  };

  // (a) A middle relay: the source of the first depth-2 page.
  const firstDeep = result.formed.pages.find((p) => depthOf.get(p.session) === 2);
  const middle = viewers.find((v) => v.id === firstDeep.source);
  result.middle_leaves = await leave(middle, '(a) a middle relay');
  // (b) The root.
  const root = viewers.find((v) => !v.closedAt && result.formed.pages.find((p) => p.name === v.name).source === 0);
  result.root_leaves = await leave(root, '(b) the root');
} catch (e) {
  failed = true;
  result.error = String(e.stack ?? e);
  log(`FAILED: ${result.error}`);
  try {
    result.pages_at_failure = await Promise.all(viewers.filter((v) => !v.closedAt).map(async (v) => {
      const r = await v.report();
      return { name: v.name, session: v.id, source: sourceOf(r), signals: r.signals.map((s) => `${s.command}${s.peer_id === undefined ? '' : `(${s.peer_id})`}@${s.at - started}`), sent: r.sent.map((s) => `${s.command}${s.peer_id === undefined ? '' : `(${s.peer_id})`}@${s.at - started}`), pcs: r.pcs, page_errors: v.pageErrors, errors: r.errors };
    }));
  } catch { /* the pages are gone */ }
} finally {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  host.stop();
}
console.log(JSON.stringify(result));
process.exit(failed ? 1 : 0);
