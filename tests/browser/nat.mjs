// Viewers behind two home routers (tests/src/nat.rs builds the topology; ../shared/TESTING.md,
// "Real networks"): OvenPlayer 0.10.38 in real Chromium, one Chromium per LAN machine, each run in
// its namespace through a wrapper script (`exec ip netns exec NS /usr/bin/chromium "$@"`) that
// playwright-core starts as its executablePath. Every page says it is a desktop Windows Chrome
// (host-eligible; with CLIENTS_ONLY=1 lan2 and lan1b say Linux Chrome: clients only), OvenPlayer
// with autoStart: true.
//
//   lan1 joins first (plays from the edge: a host peer), then lan2 (behind the other router),
//   then lan1b (behind lan1's router). lan1b should play from lan1; lan2 from the edge, within
//   3 s of joining, never without frames for long, never moved into lan1; then lan2's page
//   reloads and should again play from the edge within 3 s. At the end /metrics (read from inside
//   the host's namespace, on loopback) is read beside what the pages themselves play from.
//
// Measures and reports, does not judge: prints one JSON object on stdout (tests/tests/nat.rs
// asserts on it); progress goes to stderr. Exits non-zero only when it could not run at all.
//
// Environment: HOST_ADDR, HOST_PORT (signalling), API_PORT, SRV_NS (the host's namespace, for
// /metrics), CHROMIUM_LAN1, CHROMIUM_LAN1B, CHROMIUM_LAN2 (the wrapper scripts), MDNS (on: Chromium's
// default mDNS host candidates; off: raw LAN addresses), MOVE_AFTER_MS, CLIENTS_ONLY, BROWSER_ECHO=1.

import {
  CHROMIUM_ARGS as BASE_ARGS, DESKTOP_CHROME, LINUX_CHROME, LanMachine, RECORD_SIGNALLING, TIME_FRAMES, TRACK_RECEIVERS, aroundMetrics,
  deliveryFigures, longestGap, measure, namespaceMetrics, progress as log, ovenplayerScript, recordingPlayerPage, servePlayer,
  sleep, within,
} from './common.mjs';

const env = process.env;
const ADDR = env.HOST_ADDR ?? '198.51.100.1';
const PORT = env.HOST_PORT ?? '3333';
const API_PORT = env.API_PORT ?? '8081';
const MDNS = (env.MDNS ?? 'on') === 'on';
const MOVE_AFTER_MS = Number(env.MOVE_AFTER_MS ?? 2000);
const WS_URL = `ws://${ADDR}:${PORT}/app/stream`;
/** CLIENTS_ONLY=1: lan2 and lan1b say they are Chrome on Linux (clients only, never hosts; the
 *  plugin may move them from the edge into a host); else every page is a desktop Windows Chrome. */
const CLIENTS_ONLY = env.CLIENTS_ONLY === '1';
const MDNS_FLAG = '--disable-features=WebRtcHideLocalIpsWithMdns';
const CHROMIUM_ARGS = MDNS ? BASE_ARGS.filter((a) => a !== MDNS_FLAG) : BASE_ARGS;

/**
 * Installed in every page before OvenPlayer, after RECORD_SIGNALLING (with candidates),
 * TIME_FRAMES and TRACK_RECEIVERS: adds to each RTCPeerConnection's record its ICE states,
 * gathering states and gathered candidates, and to each sample of a receiving one its bytes and
 * its selected pair's remote candidate.
 */
const INSTRUMENT = () => {
  window.__p2pMode = [];
  window.__onConnection = (pc, record) => {
    Object.assign(record, { states: [], gathering: [], gathered: [], bytes: 0, remote: null });
    pc.addEventListener('iceconnectionstatechange', () => record.states.push({ at: Date.now(), state: pc.iceConnectionState }));
    pc.addEventListener('icegatheringstatechange', () => record.gathering.push({ at: Date.now(), state: pc.iceGatheringState }));
    pc.addEventListener('icecandidate', (e) => record.gathered.push({ at: Date.now(), candidate: e.candidate?.candidate ?? null }));
  };
  window.__onSample = (record, stats, video) => {
    record.bytes = video?.bytesReceived ?? 0;
    const pair = stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    const remote = pair && stats.find((s) => s.id === pair.remoteCandidateId);
    if (remote) record.remote = `${remote.address ?? remote.ip}:${remote.port} ${remote.candidateType}`;
  };
  /** What the page shows of itself, for the test. */
  window.__report = () => ({
    signals: window.__signals,
    sent: window.__sent,
    frameTimes: window.__frameTimes,
    p2pMode: window.__p2pMode,
    errors: window.__errors ?? [],
    pcs: window.__pcs.map(({ pc, record }) => ({ ...record, closed: pc.connectionState === 'closed', connectionState: pc.connectionState })),
  });
};

const script = ovenplayerScript('0.10.38');

/** One LAN machine: its own Chromium (in its namespace) and one page. */
class Machine extends LanMachine {
  static launch(name, executablePath) { return super.launch(name, executablePath, CHROMIUM_ARGS); }
  /** Opens the OvenPlayer page; remembers when (the join time). */
  async open() {
    const userAgent = CLIENTS_ONLY && this.name !== 'lan1' ? LINUX_CHROME : DESKTOP_CHROME;
    const context = await this.browser.newContext({ userAgent });
    const page = await context.newPage();
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${this.name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${this.name} page error: ${e.message}`));
    await page.addInitScript(RECORD_SIGNALLING, true);
    await page.addInitScript(TIME_FRAMES);
    await page.addInitScript(TRACK_RECEIVERS);
    await page.addInitScript(INSTRUMENT);
    await servePlayer(page, script, recordingPlayerPage(WS_URL));
    this.page = page;
    this.openedAt = Date.now();
    await page.goto('http://player.test/');
    log(`${this.name} opened its page`);
  }
  /** Reloads the page (a new document, a new WebSocket: a new session). */
  async reload() {
    this.openedAt = Date.now();
    await this.page.reload();
    log(`${this.name} reloaded its page`);
  }
}

/** The peer a page's picture comes from now: the `peer` of a receiving connection whose decoded
 *  frames grew in the last second (0 the edge), or null when none did. */
function source(report, now) {
  const live = report.pcs.filter((p) => p.role === 'receive' && !p.closed && p.lastGrowthAt !== null && now - p.lastGrowthAt < 1000);
  live.sort((a, b) => b.lastGrowthAt - a.lastGrowthAt);
  return live.length > 0 ? live[0].peer : null;
}

/** A page's figures since `since` (its join or reload), up to `until`. */
function summary(report, openedAt, until) {
  const frameTimes = report.frameTimes.filter((t) => t <= until);
  const offers = report.signals.filter((s) => s.command === 'offer');
  const receiving = report.pcs.filter((p) => p.role === 'receive');
  const firstBy = (test) => {
    const times = receiving.filter(test).map((p) => p.firstFrameAt).filter((t) => t !== null);
    return times.length > 0 ? Math.min(...times) - openedAt : null;
  };
  const asked = report.sent.find((s) => s.command === 'request_offer')?.at ?? null;
  return {
    session: offers[0]?.id ?? null,
    first_frame_ms: frameTimes.length > 0 ? frameTimes[0] - openedAt : null,
    request_offer_ms: asked === null ? null : asked - openedAt,
    first_frame_after_request_ms: frameTimes.length > 0 && asked !== null ? frameTimes[0] - asked : null,
    first_edge_frame_ms: firstBy((p) => p.peer === 0),
    first_peer_frame_ms: firstBy((p) => p.peer !== 0 && p.peer !== null),
    frames_presented: frameTimes.length,
    max_gap_ms: longestGap(frameTimes, until),
    observed_ms: until - openedAt,
    offers: offers.map((o) => ({ at_ms: o.at - openedAt, peer_id: o.peer_id, candidates: o.candidates ?? [] })),
    candidates_from_peers: report.signals.filter((s) => s.command === 'candidate' && s.peer_id !== 0).flatMap((s) => s.candidates ?? []),
    stops: report.signals.filter((s) => s.command === 'stop').map((s) => ({ at_ms: s.at - openedAt, peer_id: s.peer_id })),
    request_offers_sent: report.sent.filter((s) => s.command === 'request_offer').map((s) => s.at - openedAt),
    p2p_mode: report.p2pMode.map((m) => ({ at_ms: m.at - openedAt, on: m.on })),
    errors: [...report.errors, ...report.signals.filter((s) => s.code !== undefined && s.code !== 200).map((s) => `{code: ${s.code}, error: ${s.error}}`)],
    connections: report.pcs.map((p) => ({
      role: p.role, peer: p.peer, frames: p.frames, bytes: p.bytes, remote: p.remote, closed: p.closed,
      created_ms: p.createdAt - openedAt, first_frame_ms: p.firstFrameAt === null ? null : p.firstFrameAt - openedAt,
      ice: p.states.map((s) => `${s.state}@${s.at - openedAt}`).join(' '),
      gathering: p.gathering.map((s) => `${s.state}@${s.at - openedAt}`).join(' '),
      gathered: p.gathered.map((c) => `${c.candidate ?? 'end-of-candidates'}@${c.at - openedAt}`),
    })),
    ...deliveryFigures(report.sent, receiving),
  };
}

/** The host's /metrics, read on loopback from inside its namespace. */
function metrics() {
  const text = namespaceMetrics(env.SRV_NS, API_PORT);
  const value = (name, labels) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
    return line === undefined ? null : Number(line.trim().split(/\s+/).at(-1));
  };
  const stream = { app: 'app', stream: 'stream' };
  return {
    viewers_p2p: value('viewers', { ...stream, delivery: 'p2p' }),
    viewers_edge: value('viewers', { ...stream, delivery: 'edge' }),
    sessions: value('sessions', stream),
    p2p_lines: text.split('\n').filter((l) => /^(p2p_|viewers\{|relaying_viewers|free_relay_slots)/.test(l)),
  };
}

const result = { mdns: MDNS, clients_only: CLIENTS_ONLY, move_after_ms: MOVE_AFTER_MS, steps: [] };
await measure(result, async (step, machines) => {
  // Three Chromiums at most on two cores: one per LAN machine, started together.
  const [lan1, lan2, lan1b] = await Promise.all([
    Machine.launch('lan1', env.CHROMIUM_LAN1), Machine.launch('lan2', env.CHROMIUM_LAN2), Machine.launch('lan1b', env.CHROMIUM_LAN1B),
  ]);
  Object.assign(machines, { lan1, lan2, lan1b });
  result.chromium = lan1.browser.version();
  step(`Chromium ${result.chromium} in three namespaces, mDNS ${MDNS ? 'on' : 'off'}`);

  // lan1: the first viewer, from the edge; it becomes a host peer once its edge connection plays.
  await lan1.open();
  const lan1Plays = await within(15000, async () => source(await lan1.report(), Date.now()) === 0);
  step(`lan1 ${lan1Plays ? 'plays from the edge' : 'does not play within 15 s'}`);
  await sleep(1000);

  // lan2, behind the other router.
  await lan2.open();
  const lan2Plays = await within(10000, async () => (await lan2.report()).frameTimes.length > 0);
  step(`lan2 ${lan2Plays ? `presents its first frame (+${(await lan2.report()).frameTimes[0] - lan2.openedAt} ms)` : 'presents no frame within 10 s'}`);
  await sleep(500);

  // lan1b, behind lan1's router: it should play from lan1.
  await lan1b.open();
  const lan1Id = summary(await lan1.report(), lan1.openedAt, Date.now()).session;
  const fromLan1 = await within(15000 + MOVE_AFTER_MS, async () => source(await lan1b.report(), Date.now()) === lan1Id);
  step(`lan1b ${fromLan1 ? 'plays from lan1' : `does not play from lan1 (session ${lan1Id}) within ${15000 + MOVE_AFTER_MS} ms`}`);

  // Watch lan2 long enough for any move (MoveAfterMs) to have happened several times.
  await sleep(Math.max(8000, 3 * MOVE_AFTER_MS + 2000));
  const beforeReload = Date.now();
  result.lan2 = summary(await lan2.report(), lan2.openedAt, beforeReload);
  result.lan2.source_at_end = source(await lan2.report(), beforeReload);

  // lan2 reloads: a new session from the same address. It must not be paired into lan1 again.
  await lan2.reload();
  const reloadPlays = await within(10000, async () => (await lan2.report()).frameTimes.length > 0);
  step(`lan2 (reloaded) ${reloadPlays ? 'presents its first frame' : 'presents no frame within 10 s'}`);
  await sleep(Math.max(6000, 2 * MOVE_AFTER_MS + 2000));

  // The end: what each page plays from, /metrics, and the pages again.
  const { metrics: read, before, after, fromPeers, playing } = await aroundMetrics(machines, source, metrics, (p) => p !== null && p !== 0);
  result.metrics = read;
  result.sources_at_metrics = { before, after };
  result.playing_from_peers_at_metrics = playing;
  step(`/metrics: viewers p2p ${result.metrics.viewers_p2p}, edge ${result.metrics.viewers_edge}; pages playing from a peer: ${fromPeers(before)} before, ${fromPeers(after)} after`);

  const end = Date.now();
  result.lan1 = summary(await lan1.report(), lan1.openedAt, end);
  result.lan1.source_at_end = after.lan1;
  result.lan1b = summary(await lan1b.report(), lan1b.openedAt, end);
  result.lan1b.source_at_end = after.lan1b;
  result.lan2_reloaded = summary(await lan2.report(), lan2.openedAt, end);
  result.lan2_reloaded.source_at_end = after.lan2;
});
