// The project's player (host/assets/player.js, served by the host at /player.js) behind two home
// routers (tests/src/nat.rs builds the topology; ../shared/TESTING.md, "Real networks"): one
// Chromium per LAN machine, each run in its namespace through a wrapper script (`exec ip netns
// exec NS /usr/bin/chromium "$@"`) that playwright-core starts as its executablePath, as nat.mjs
// does for OvenPlayer 0.10.38. Each page is a site (http://player.test, answered by playwright)
// embedding the player as README.md shows: `import { P2PPlayer } from
// 'http://198.51.100.1:PORT/player.js'`, from the host itself.
//
//   lan1 (desktop Windows Chrome: host-eligible) joins first and plays from the edge; then lan2,
//   behind the other router (Linux Chrome: a client only; LAN2_HOSTS=1: Windows Chrome, may host
//   too), joins and plays from the edge at once. The server should move lan2 into lan1 after
//   MOVE_AFTER_MS (or, with LAN2_HOSTS=1, either into the other): player.js gives its P2P
//   connections the STUN the edge's offer announced (`p2p_ice_servers`: the host's own), so both
//   sides have server-reflexive candidates and the link forms by hole punching through the two
//   port-restricted routers. At the end /metrics (read from inside the host's namespace, on
//   loopback) is read beside what the pages play from.
//
// Measures and reports, does not judge: prints one JSON object on stdout (tests/tests/nat.rs
// asserts on it); progress goes to stderr. Exits non-zero only when it could not run at all.
//
// Environment: HOST_ADDR, HOST_PORT (signalling, and /player.js), API_PORT, SRV_NS (the host's
// namespace, for /metrics), CHROMIUM_LAN1, CHROMIUM_LAN2 (the wrapper scripts), MOVE_AFTER_MS,
// LAN2_HOSTS, PLAYER_OPTIONS (JSON, more options for every page's player), BROWSER_ECHO=1.

import {
  CHROMIUM_ARGS as BASE_ARGS, DESKTOP_CHROME, LINUX_CHROME, LanMachine, RECORD_MESSAGES, TIME_FRAMES, aroundMetrics, deliveryFigures,
  longestGap, measure, namespaceMetrics, progress as log, sleep, within,
} from './common.mjs';

const env = process.env;
const ADDR = env.HOST_ADDR ?? '198.51.100.1';
const PORT = env.HOST_PORT ?? '3333';
const API_PORT = env.API_PORT ?? '8081';
const MOVE_AFTER_MS = Number(env.MOVE_AFTER_MS ?? 2000);
const LAN2_HOSTS = env.LAN2_HOSTS === '1';
const WS_URL = `ws://${ADDR}:${PORT}/app/stream`;
/** More options for P2PPlayer.create (by hand, to see the test fail: `{"iceServers": []}`, no STUN). */
const PLAYER_OPTIONS = JSON.parse(env.PLAYER_OPTIONS ?? '{}');
const PLAYER_URL = `http://${ADDR}:${PORT}/player.js`;
/** Chromium's default: mDNS names for host candidates (what a real user has). */
const CHROMIUM_ARGS = BASE_ARGS.filter((a) => a !== '--disable-features=WebRtcHideLocalIpsWithMdns');

/**
 * Installed in every page before the player, after RECORD_MESSAGES and TIME_FRAMES (every 10 ms):
 * every RTCPeerConnection (its configuration, ICE states, gathered and remote candidates); each
 * connection's decoded video frames and candidate pairs (getStats, every 100 ms, kept after it
 * closes). The page tags a receiving connection with the peer the player's `source` event names.
 */
const INSTRUMENT = () => {
  window.__events = [];
  window.__pcs = [];
  const NativePc = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePc {
    constructor(configuration = {}) {
      super(configuration);
      const record = {
        createdAt: Date.now(), configuration: JSON.parse(JSON.stringify(configuration)), role: null, peer: null,
        ice: [], connection: [], gathered: [], remote: [], frames: 0, bytes: 0, firstFrameAt: null, lastGrowthAt: null,
        selected: null, pairs: [],
      };
      this.__record = record;
      window.__pcs.push({ pc: this, record });
      this.addEventListener('iceconnectionstatechange', () => record.ice.push({ at: Date.now(), state: this.iceConnectionState }));
      this.addEventListener('connectionstatechange', () => record.connection.push({ at: Date.now(), state: this.connectionState }));
      this.addEventListener('icecandidate', (e) => record.gathered.push({ at: Date.now(), candidate: e.candidate?.candidate ?? null }));
    }
    setRemoteDescription(description, ...rest) {
      if (description?.type === 'offer') this.__record.role = 'receive';
      else if (description?.type === 'answer') this.__record.role = 'relay';
      for (const line of String(description?.sdp ?? '').split(/\r?\n/)) {
        if (line.startsWith('a=candidate:')) this.__record.remote.push({ at: Date.now(), candidate: line.slice(2) });
      }
      return super.setRemoteDescription(description, ...rest);
    }
    addIceCandidate(candidate, ...rest) {
      if (candidate?.candidate) this.__record.remote.push({ at: Date.now(), candidate: candidate.candidate });
      return super.addIceCandidate(candidate, ...rest);
    }
  };
  const describe = (c) => c && `${c.candidateType} ${c.address ?? c.ip}:${c.port} (${c.protocol})`;
  setInterval(async () => {
    for (const { pc, record } of window.__pcs) {
      if (pc.connectionState === 'closed') continue;
      try {
        const stats = new Map([...(await pc.getStats()).values()].map((s) => [s.id, s]));
        const all = [...stats.values()];
        const video = all.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
        if (video) {
          const frames = video.framesDecoded ?? 0;
          if (frames > record.frames) {
            record.lastGrowthAt = Date.now();
            record.firstFrameAt ??= Date.now();
          }
          record.frames = frames;
          record.bytes = video.bytesReceived ?? 0;
        }
        const pair = (p) => ({
          state: p.state, nominated: p.nominated ?? false, local: describe(stats.get(p.localCandidateId)), remote: describe(stats.get(p.remoteCandidateId)),
          localType: stats.get(p.localCandidateId)?.candidateType ?? null, remoteType: stats.get(p.remoteCandidateId)?.candidateType ?? null,
          requestsSent: p.requestsSent ?? 0, responsesReceived: p.responsesReceived ?? 0, requestsReceived: p.requestsReceived ?? 0,
        });
        record.pairs = all.filter((s) => s.type === 'candidate-pair').map(pair);
        const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
        const selected = transport ? stats.get(transport.selectedCandidatePairId) : all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
        if (selected) record.selected = { at: Date.now(), ...pair(selected) };
      } catch { /* closing */ }
    }
  }, 100);
  /** What the page shows of itself, for the test. */
  window.__report = () => ({
    socketUrl: window.__socketUrl ?? null,
    loadError: window.__loadError ?? null,
    sent: window.__sent.map(({ at, command, id, peer_id: peer, state }) => ({ at, command, id, peer_id: peer, state })),
    received: window.__received.map(({ at, command, id, peer_id: peer, code, error, p2p_ice_servers: ice }) => ({ at, command, id, peer_id: peer, code, error, p2p_ice_servers: ice })),
    frameTimes: window.__frameTimes,
    events: window.__events,
    state: window.player?.state ?? null,
    source: window.player?.source ?? null,
    sessionId: window.player?.sessionId ?? null,
    pcs: window.__pcs.map(({ pc, record }) => ({ ...record, closed: pc.connectionState === 'closed', connectionState: pc.connectionState })),
  });
};

/** A site embedding the player as README.md shows, importing it from the host. */
const page = () => `<!doctype html><html><body>
<video id="video" muted playsinline></video>
<script type="module">
  window.__events = [];
  try {
    const { P2PPlayer } = await import(${JSON.stringify(PLAYER_URL)});
    const player = P2PPlayer.create(document.getElementById('video'), { ...${JSON.stringify(PLAYER_OPTIONS)}, url: ${JSON.stringify(WS_URL)} });
    for (const name of ['state', 'source', 'relaying']) {
      player.on(name, (...args) => {
        window.__events.push({ at: Date.now(), name, args: JSON.parse(JSON.stringify(args)) });
        // A new source: the player's receiving connection is the one it names.
        if (name === 'source' && args[0].from !== null && player.connection?.__record) player.connection.__record.peer = args[0].peerId;
      });
    }
    window.player = player;
  } catch (e) {
    window.__loadError = String(e);
  }
</script></body></html>`;

/** One LAN machine: its own Chromium (in its namespace) and one page. */
class Machine extends LanMachine {
  static launch(name, executablePath) { return super.launch(name, executablePath, CHROMIUM_ARGS); }
  async open(userAgent) {
    const context = await this.browser.newContext({ userAgent });
    const tab = await context.newPage();
    if (env.BROWSER_ECHO) tab.on('console', (m) => log(`${this.name} console: ${m.text()}`));
    tab.on('pageerror', (e) => log(`${this.name} page error: ${e.message}`));
    await tab.addInitScript(RECORD_MESSAGES);
    await tab.addInitScript(TIME_FRAMES, 10);
    await tab.addInitScript(INSTRUMENT);
    await tab.route('http://player.test/**', (route) => route.fulfill({ body: page(), contentType: 'text/html' }));
    this.page = tab;
    this.userAgent = userAgent === LINUX_CHROME ? 'Linux Chrome (client only)' : 'Windows Chrome (may host)';
    this.openedAt = Date.now();
    await tab.goto('http://player.test/');
    log(`${this.name} opened its page (${this.userAgent})`);
  }
}

/** The receiving connection the player plays from now (tagged by its `source` event), if open. */
const current = (report) => report.pcs.filter((p) => p.role === 'receive' && !p.closed).at(-1) ?? null;

/** A peer the page decodes frames from now: its player says `peer` and that connection's decoded
 *  frames grew in the last second. */
function playsFromPeer(report, now) {
  const pc = current(report);
  return report.source?.from === 'peer' && pc !== null && pc.peer === report.source.peerId && pc.lastGrowthAt !== null && now - pc.lastGrowthAt < 1000;
}

/** A page's figures since it opened, up to `until`. */
function summary(machine, report, until) {
  const openedAt = machine.openedAt;
  const rel = (t) => (t === null || t === undefined ? null : t - openedAt);
  const frameTimes = report.frameTimes.filter((t) => t <= until);
  const asked = report.sent.find((s) => s.command === 'request_offer')?.at ?? null;
  const offers = report.received.filter((m) => m.command === 'offer');
  const stops = report.received.filter((m) => m.command === 'stop');
  const receiving = report.pcs.filter((p) => p.role === 'receive');
  const firstPeer = receiving.filter((p) => p.peer !== 0 && p.peer !== null && p.firstFrameAt !== null).map((p) => p.firstFrameAt);
  const firstEdge = receiving.filter((p) => p.peer === 0 && p.firstFrameAt !== null).map((p) => p.firstFrameAt);
  const firstPeerAt = firstPeer.length > 0 ? Math.min(...firstPeer) : null;
  // The move: the first `stop {peer_id: 0}`. Its gap: the longest time without a presented frame
  // from 1 s before it to 1 s after the first frame decoded from the peer (getStats, sampled every
  // 100 ms; a frame or two of the edge may still be presented after the stop), or to the end.
  const move = stops.find((s) => s.peer_id === 0) ?? null;
  let moveGap = null;
  if (move) {
    const to = Math.min(until, (firstPeerAt ?? until) + 1000);
    const times = [...frameTimes.filter((t) => t >= move.at - 1000 && t <= to), to];
    for (let i = 1; i < times.length; i += 1) moveGap = Math.max(moveGap ?? 0, times[i] - times[i - 1]);
  }
  const pc = current(report);
  return {
    user_agent: machine.userAgent,
    socket_url: report.socketUrl,
    load_error: report.loadError,
    session: report.sessionId,
    state: report.state,
    source: report.source,
    plays_from_peer: playsFromPeer(report, until),
    presented_in_last_second: frameTimes.length > 0 && until - frameTimes.at(-1) < 1000,
    source_events: report.events.filter((e) => e.name === 'source').map((e) => ({ at_ms: rel(e.at), ...e.args[0] })),
    state_events: report.events.filter((e) => e.name === 'state').map((e) => `${e.args[0]}@${rel(e.at)}${typeof e.args[1] === 'string' ? ` (${e.args[1]})` : ''}`),
    relaying_events: report.events.filter((e) => e.name === 'relaying').map((e) => ({ at_ms: rel(e.at), count: e.args[0] })),
    request_offer_ms: rel(asked),
    first_frame_after_request_ms: frameTimes.length > 0 && asked !== null ? frameTimes[0] - asked : null,
    first_edge_frame_ms: firstEdge.length > 0 ? rel(Math.min(...firstEdge)) : null,
    first_peer_frame_ms: rel(firstPeerAt),
    move_at_ms: rel(move?.at),
    move_gap_ms: moveGap,
    first_peer_frame_after_move_ms: move && firstPeerAt !== null ? firstPeerAt - move.at : null,
    first_peer_frame_after_request_ms: asked !== null && firstPeerAt !== null ? firstPeerAt - asked : null,
    frames_presented: frameTimes.length,
    max_gap_ms: longestGap(frameTimes, until),
    observed_ms: until - openedAt,
    offers: offers.map((o) => ({ at_ms: rel(o.at), id: o.id, peer_id: o.peer_id, p2p_ice_servers: o.p2p_ice_servers ?? null })),
    stops: stops.map((s) => ({ at_ms: rel(s.at), peer_id: s.peer_id })),
    link_reports: report.sent.filter((s) => s.command === 'p2p_link_state').map((s) => ({ at_ms: rel(s.at), peer_id: s.peer_id, state: s.state })),
    ...deliveryFigures(report.sent, receiving),
    current_connection: pc && { peer: pc.peer, frames: pc.frames, ice_servers: pc.configuration.iceServers ?? [], selected: pc.selected },
    connections: report.pcs.map((p) => ({
      role: p.role, peer: p.peer, closed: p.closed, connection_state: p.connectionState, frames: p.frames, bytes: p.bytes,
      ice_servers: p.configuration.iceServers ?? [], created_ms: rel(p.createdAt), first_frame_ms: rel(p.firstFrameAt),
      ice: p.ice.map((s) => `${s.state}@${rel(s.at)}`).join(' '),
      states: p.connection.map((s) => `${s.state}@${rel(s.at)}`).join(' '),
      gathered: p.gathered.map((c) => `${c.candidate ?? 'end-of-candidates'}@${rel(c.at)}`),
      remote_candidates: p.remote.map((c) => `${c.candidate}@${rel(c.at)}`),
      selected: p.selected, pairs: p.pairs,
    })),
  };
}

/** The host's /metrics, read on loopback from inside its namespace. */
function metrics() {
  const lines = namespaceMetrics(env.SRV_NS, API_PORT).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  /** The sum of the series named `name` whose labels include `labels` (null when none). */
  const value = (name, labels = {}) => {
    const found = lines.filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
    return found.length === 0 ? null : found.reduce((n, l) => n + Number(l.trim().split(/\s+/).at(-1)), 0);
  };
  const stream = { app: 'app', stream: 'stream' };
  return {
    viewers_p2p: value('viewers', { ...stream, delivery: 'p2p' }),
    viewers_edge: value('viewers', { ...stream, delivery: 'edge' }),
    links_confirmed: value('p2p_links_confirmed_total'),
    stun_answered: value('stun_binding_answered_total'),
    p2p_lines: lines.filter((l) => /^(p2p_|viewers\{|relaying_viewers|free_relay_slots|stun_)/.test(l)),
  };
}

const result = { move_after_ms: MOVE_AFTER_MS, lan2_hosts: LAN2_HOSTS, player_options: PLAYER_OPTIONS, steps: [] };
await measure(result, async (step, machines) => {
  const [lan1, lan2] = await Promise.all([Machine.launch('lan1', env.CHROMIUM_LAN1), Machine.launch('lan2', env.CHROMIUM_LAN2)]);
  Object.assign(machines, { lan1, lan2 });
  result.chromium = lan1.browser.version();
  step(`Chromium ${result.chromium} in two namespaces (mDNS on), player.js from ${PLAYER_URL}`);

  // lan1: the first viewer, from the edge; a host peer once it plays.
  await lan1.open(DESKTOP_CHROME);
  const lan1Plays = await within(15000, async () => {
    const r = await lan1.report();
    return r.source?.from === 'edge' && current(r)?.lastGrowthAt != null;
  });
  step(`lan1 ${lan1Plays ? 'plays from the edge' : `does not play from the edge within 15 s (${JSON.stringify((await lan1.report()).loadError)})`}`);
  await sleep(1000);

  // lan2, behind the other router: the edge at once, then moved into lan1 (or lan1 into lan2).
  await lan2.open(LAN2_HOSTS ? DESKTOP_CHROME : LINUX_CHROME);
  const lan2Plays = await within(10000, async () => (await lan2.report()).frameTimes.length > 0);
  step(`lan2 ${lan2Plays ? `presents its first frame (+${(await lan2.report()).frameTimes[0] - lan2.openedAt} ms)` : 'presents no frame within 10 s'}`);

  // A P2P link: one page decodes frames from the other over its peer connection.
  const wait = MOVE_AFTER_MS + 20000;
  const linked = await within(wait, async () => {
    const now = Date.now();
    const [r1, r2] = await Promise.all([lan1.report(), lan2.report()]);
    if (playsFromPeer(r2, now)) return 'lan2 plays from lan1';
    if (LAN2_HOSTS && playsFromPeer(r1, now)) return 'lan1 plays from lan2';
    return null;
  });
  step(linked ?? `no page decodes frames from a peer within ${wait} ms of lan2's first frame`);

  // Let it run: a link that plays keeps playing; one that does not has time to fail and fall back.
  await sleep(6000);
  const { metrics: read, before, after, fromPeers, playing } = await aroundMetrics(machines, playsFromPeer, metrics, Boolean);
  result.metrics = read;
  result.from_peer_at_metrics = { before, after };
  result.playing_from_peers_at_metrics = playing;
  step(`/metrics: viewers p2p ${result.metrics.viewers_p2p}, edge ${result.metrics.viewers_edge}, links confirmed ${result.metrics.links_confirmed}, STUN answered ${result.metrics.stun_answered}; pages playing from a peer: ${fromPeers(before)} before, ${fromPeers(after)} after`);

  const end = Date.now();
  result.lan1 = summary(lan1, await lan1.report(), end);
  result.lan2 = summary(lan2, await lan2.report(), end);
});
