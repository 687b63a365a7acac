// player.js: a WebRTC player for OvenMediaEngine's signalling that relays to other viewers (P2P).
//
// An ES module with no dependencies and no build step. The host serves it at `GET /player.js`
// (with CORS, so any site may import it); it is also one file a site can vendor.
//
//   <video id="video" muted playsinline controls></video>
//   <script type="module">
//     import { P2PPlayer } from 'http://HOST:3333/player.js';
//     const player = P2PPlayer.create(document.getElementById('video'), { url: 'ws://HOST:3333/app/stream' });
//     player.on('state', (state, detail) => console.log(state, detail));
//   </script>
//
// API
//   P2PPlayer.create(video, { url, iceServers, autoStart = true }) -> player
//     video       an HTMLVideoElement; the player sets its srcObject and keeps it across sources
//                 (the last frame stays up while the next source connects).
//     url         the signalling WebSocket, `ws[s]://HOST:PORT/app/stream[?query]`.
//     iceServers  RTCIceServer list for every peer-to-peer connection (receiving and relaying),
//                 and the edge's (less any at the edge's own address: see #iceServersFrom).
//                 Without it the P2P connections use the STUN the server announces
//                 (`p2p_ice_servers`), if any. Never forces relay-only.
//     autoStart   connect at once (default); otherwise on play().
//   player.on(event, fn) / player.off(event, fn)   (on returns the player, for chaining)
//   player.play()     connect (or resume a paused element); after stop() or an error, start over.
//   player.stop()     close the signalling and every connection; state `paused`.
//   player.destroy()  stop() and let go of the element and the listeners.
//   Read-only: player.state, player.source, player.relaying, player.relayingTo (client ids),
//   player.sessionId, player.connection (the receiving RTCPeerConnection, for getStats()).
//
// Events
//   state     (state, detail): `loading` (connecting, waiting for an offer, reconnecting; detail
//             says why), `playing` (the element plays), `paused` (stop(), or the user paused the
//             element), `error` (the server refused: detail `{code, message}`; the player waits
//             for play()).
//   source    ({ from: 'edge' | 'peer' | null, peerId }): where the stream comes from; `null`
//             while there is no source (asking again, reconnecting).
//   relaying  (count): how many clients this player feeds (relay connections connected).
//
// What it speaks (OME's WebRTC signalling, as OvenPlayer does; ../shared/PROTOCOL.md)
//   -> request_offer; <- offer {id, peer_id, sdp, candidates}; -> answer, candidate (trickled);
//   <- candidate; <- ping -> pong; <- stop {peer_id}. peer_id 0 is the server (the edge), any
//   other is a host peer. A host peer (it relays): <- request_offer_p2p {id, peer_id: client} ->
//   offer_p2p (the received tracks re-sent: browsers cannot forward without re-encoding),
//   candidate_p2p; <- answer_p2p, candidate_p2p (the client's); <- stop {peer_id: client}.
//   A player playing from a peer relays what it receives when asked (deeper trees).
//   Against a real OvenMediaEngine it plays from the edge (OME's `iceServers` in an offer are
//   used for that connection, without OvenPlayer's relay-only policy).
//
// This project's P2P extensions, used only once the server announced them: its edge offer
// carries `p2p_ice_servers` (RTCIceServer list: the host's own STUN). OME answers unknown
// commands with an error, so against any other server the player sends none of this. A server
// that announced them is remembered for this player's later sessions (reconnections to `url`).
//   - The answer to a host peer's offer carries `link_reports: true`; the player then reports
//     `{command: 'p2p_link_state', id, peer_id: HOST, state: 'connected' | 'failed'}` when its
//     receiving connection connects, or fails (ICE failed, or not connected within 8 s).
//   - As a host peer it reports `state: 'failed'` about a client whose relay connection fails
//     (ICE failed, or not connected within 10 s: a reporting client speaks first).
//
// Coming back by itself
//   - Signalling closed without an error (host restarted, an edge killed behind a balancer):
//     reconnect after 250 ms, doubling to 4 s, jittered; the element keeps its last frame.
//   - Receiving connection failed (or not connected within 8 s): report (P2P), ask again. The
//     server then serves it from the edge.
//   - `stop {peer_id: its source}` (its host left, or the server moves it): close that connection
//     and ask again (`request_offer`), as OvenPlayer does.
//   - No offer 10 s after asking: the signalling is presumed dead; reconnect.
//   Asking again ends this player's relays: the server releases a host that starts over, and
//   tells its clients.
//
// Autoplay: a browser may refuse to play with sound without a user gesture; the player then
// mutes the element and plays.

/** The server's peer id (the edge) wherever a peer id is expected. */
const EDGE = 0;
/** First reconnection delay, and the cap it doubles up to. */
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 4000;
/** A WebSocket not open by then is given up (a blackholed address can take minutes). */
const OPEN_TIMEOUT_MS = 5000;
/** No offer this long after request_offer: the signalling is presumed dead. */
const OFFER_TIMEOUT_MS = 10000;
/** A connection not connected this long (from its start, or since it went `disconnected`) failed. */
const LINK_TIMEOUT_MS = 8000;
/**
 * The same for a relay connection, longer: a client that reports its link says so first (its
 * report is the one the server acts on); the host's report is for clients that cannot (OvenPlayer).
 */
const RELAY_LINK_TIMEOUT_MS = 10000;

/** Link states the server understands (`p2p_link_state`). */
const CONNECTED = 'connected';
const FAILED = 'failed';

export class P2PPlayer {
  /** Creates a player on `video` (see the module's documentation). */
  static create(video, options) {
    return new P2PPlayer(video, options);
  }

  #video;
  #url;
  #iceServers; // the page's, or null
  #listeners = new Map(); // event -> Set of functions

  #wanted = false; // the page wants playback (play() until stop())
  #state = 'paused';
  #socket = null;
  #sessionId = null;
  #main = null; // the Link we play from (peer EDGE or a host peer)
  #relays = new Map(); // client session id -> Link we feed
  #relaying = 0;
  #stream = null; // what #main delivers, once its tracks arrived
  #streamWaiters = []; // relays waiting for a stream to re-send

  #announcedIce = null; // `p2p_ice_servers` of this server: it takes link reports
  #attempt = 0; // reconnections since the last offer
  #reconnectTimer = null;
  #offerTimer = null;
  #removeVideoListeners;

  constructor(video, { url, iceServers = null, autoStart = true } = {}) {
    if (!(video instanceof HTMLVideoElement)) throw new TypeError('P2PPlayer needs a <video> element');
    if (!url) throw new TypeError('P2PPlayer needs the signalling url (ws://HOST:PORT/app/stream)');
    this.#video = video;
    this.#url = url;
    this.#iceServers = iceServers;
    video.playsInline = true;
    video.autoplay = true;
    this.#removeVideoListeners = this.#watchVideo();
    // Deferred, so that listeners added right after create() see the first events.
    if (autoStart) queueMicrotask(() => this.play());
  }

  get state() { return this.#state; }
  get source() { return this.#sourceOf(this.#main); }
  get relaying() { return this.#relaying; }
  get relayingTo() { return [...this.#relays].filter(([, link]) => link.isConnected()).map(([id]) => id); }
  get sessionId() { return this.#sessionId; }
  get connection() { return this.#main?.pc ?? null; }

  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
    return this;
  }

  play() {
    if (!this.#video) throw new Error('this player was destroyed');
    this.#wanted = true;
    if (this.#socket || this.#reconnectTimer) {
      this.#video.play().catch(() => {});
      return;
    }
    this.#attempt = 0;
    this.#connect();
  }

  stop() {
    this.#wanted = false;
    this.#closeSignalling();
    this.#setState('paused', 'stopped');
  }

  destroy() {
    if (!this.#video) return;
    this.stop();
    this.#removeVideoListeners();
    this.#video.srcObject = null;
    this.#video = null;
    this.#listeners.clear();
  }

  // --- Signalling ------------------------------------------------------------------------------

  #connect() {
    this.#reconnectTimer = null;
    this.#setState('loading', this.#attempt ? `reconnecting (attempt ${this.#attempt})` : 'connecting');
    // `p2p_stun=1` only when its P2P connections will have STUN: the page's servers, or, given
    // none at all, the ones the server announces (a page that passes `iceServers: []` has none).
    const usesStun = this.#iceServers === null || this.#iceServers.length > 0;
    const socket = new WebSocket(usesStun ? withStunFlag(this.#url) : this.#url);
    this.#socket = socket;
    const openTimer = setTimeout(() => {
      if (socket === this.#socket) this.#signallingLost(`signalling not open within ${OPEN_TIMEOUT_MS} ms`);
    }, OPEN_TIMEOUT_MS);
    socket.onopen = () => {
      clearTimeout(openTimer);
      this.#requestOffer();
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#receive(event.data);
    };
    socket.onclose = (event) => {
      clearTimeout(openTimer);
      if (socket === this.#socket) this.#signallingLost(`signalling closed (${event.code})`);
    };
  }

  /** The socket closed under us: everything it carried is gone; come back unless told not to. */
  #signallingLost(why) {
    this.#closeSignalling();
    if (!this.#wanted || this.#state === 'error') return;
    const delay = this.#backoff();
    this.#setState('loading', `${why}; reconnecting in ${delay} ms`);
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  /** 250 ms doubling to 4 s, each drawn in [half, whole] so that a crowd does not come back at once. */
  #backoff() {
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  #closeSignalling() {
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#offerTimer);
    this.#reconnectTimer = this.#offerTimer = null;
    const socket = this.#socket;
    this.#socket = null; // first: its close event is then not ours to handle
    socket?.close();
    this.#dropSource();
    this.#closeRelays();
    this.#sessionId = null;
  }

  #send(message) {
    if (this.#socket?.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(message));
  }

  /** Asks for a stream (from the edge or a host peer, the server decides). */
  #requestOffer() {
    this.#send({ command: 'request_offer' });
    clearTimeout(this.#offerTimer);
    this.#offerTimer = setTimeout(() => this.#signallingLost(`no offer within ${OFFER_TIMEOUT_MS} ms`), OFFER_TIMEOUT_MS);
  }

  /** Drops the current source and asks again, on the same socket. */
  #askAgain(why) {
    this.#dropSource();
    // The server releases a host that asks again (its clients are told): ours are gone too.
    this.#closeRelays();
    this.#setState('loading', why);
    this.#requestOffer();
  }

  #receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // not ours to understand
    }
    if (message.command === undefined && message.error !== undefined) {
      this.#refused(message);
      return;
    }
    const peer = message.peer_id ?? EDGE;
    const candidates = Array.isArray(message.candidates) ? message.candidates : [];
    switch (message.command) {
      case 'ping': this.#send({ command: 'pong' }); break;
      case 'offer': this.#accept(message); break;
      case 'candidate': if (this.#main?.peer === peer) this.#main.addCandidates(candidates); break;
      case 'request_offer_p2p': this.#learn(message); this.#relayTo(message.id, peer); break;
      case 'answer_p2p': this.#answered(peer, message.sdp); break;
      case 'candidate_p2p': this.#relays.get(peer)?.addCandidates(candidates); break;
      case 'stop': this.#stopped(peer); break;
      default: break; // notifications and the like: nothing to do
    }
  }

  /** An error message from the server (it closes the socket next): final until play(). */
  #refused({ code, error }) {
    this.#wanted = false;
    this.#closeSignalling();
    this.#setState('error', { code, message: error });
  }

  /** `stop {peer_id}`: our source is gone (its host left, or the server moves us), or a client is. */
  #stopped(peer) {
    if (this.#main?.peer === peer) this.#askAgain(peer === EDGE ? 'moved by the server' : `host ${peer} left`);
    else this.#closeRelay(peer);
  }

  // --- Receiving -------------------------------------------------------------------------------

  /** Plays what `offer` offers: a new receiving connection, answered, trickled. */
  #accept(offer) {
    clearTimeout(this.#offerTimer);
    this.#attempt = 0; // the server works: the next loss starts the backoff over
    this.#sessionId = offer.id;
    this.#learn(offer);
    this.#dropSource();
    const peer = offer.peer_id ?? EDGE;
    const link = new Link(peer, { iceServers: this.#iceServersFrom(peer, offer) });
    this.#main = link;
    link.pc.ontrack = (event) => this.#received(link, event);
    link.onCandidate = (candidate) => this.#send({ command: 'candidate', id: offer.id, peer_id: peer, candidates: [candidate] });
    link.watch(LINK_TIMEOUT_MS, {
      up: () => this.#report(peer, CONNECTED),
      down: (why) => this.#mainFailed(link, why),
    });
    this.#emit('source', this.#sourceOf(link));
    this.#setState('loading', `connecting to ${describe(peer)}`);
    this.#answer(link, offer).catch((e) => this.#mainFailed(link, `could not be set up (${e.message ?? e})`));
  }

  async #answer(link, offer) {
    await link.setRemote(offer.sdp);
    link.addCandidates(Array.isArray(offer.candidates) ? offer.candidates : []);
    const answer = await link.pc.createAnswer();
    await link.pc.setLocalDescription(answer);
    if (link !== this.#main) return; // superseded meanwhile
    const reporting = link.peer !== EDGE && this.#reportsLinks();
    this.#send({ command: 'answer', id: offer.id, peer_id: link.peer, sdp: { type: answer.type, sdp: answer.sdp }, ...(reporting && { link_reports: true }) });
  }

  /**
   * The server announces link reports and its STUN with `p2p_ice_servers` (any offer, and
   * `request_offer_p2p`, may carry it). An empty list keeps what was announced before: the
   * plugin sends `[]` when the operator named no servers of its own, meaning "the edge's".
   */
  #learn(message) {
    const servers = message.p2p_ice_servers;
    if (!Array.isArray(servers)) return;
    if (servers.length > 0 || this.#announcedIce === null) this.#announcedIce = servers;
  }

  #reportsLinks() {
    return this.#announcedIce !== null;
  }

  /**
   * ICE servers of a receiving connection. From a peer: the page's, else the announced STUN.
   * From the edge: the page's, else OME's own (`iceServers` in its offer, TURN), never the
   * announced STUN: the edge needs none (its candidates are public), and it is served at the
   * edge's own ICE address, from which Chromium then takes every packet for a STUN server's
   * answer: the edge's checks never reach ICE and the connection never connects.
   */
  #iceServersFrom(peer, offer) {
    if (peer !== EDGE) return this.#iceServers ?? this.#announcedIce ?? [];
    const servers = this.#iceServers ?? (offer.iceServers ?? offer.ice_servers ?? []).map(toIceServer);
    return withoutAddresses(servers, candidateAddresses(offer));
  }

  /** A track arrived on `link`: its stream goes on screen and to the relays waiting for it. */
  #received(link, event) {
    if (link !== this.#main) return;
    let stream = event.streams[0];
    if (!stream) {
      // An offer without a stream-level msid: gather its tracks into one stream of our own.
      link.ownStream ??= new MediaStream();
      link.ownStream.addTrack(event.track);
      stream = link.ownStream;
    }
    if (this.#stream === stream) return;
    this.#stream = stream;
    this.#video.srcObject = stream;
    this.#startPlayback();
    for (const resolve of this.#streamWaiters.splice(0)) resolve(stream);
  }

  #startPlayback() {
    this.#video.play().catch((e) => {
      if (e.name !== 'NotAllowedError' || this.#video.muted) return;
      // Autoplay with sound refused without a gesture: muted is allowed.
      this.#video.muted = true;
      this.#video.play().catch(() => {});
    });
  }

  /** Our receiving connection failed (or never connected): say so if the server listens, ask again. */
  #mainFailed(link, why) {
    if (link !== this.#main) return;
    this.#report(link.peer, FAILED);
    this.#askAgain(`connection to ${describe(link.peer)} ${why}`);
  }

  /** `p2p_link_state` about the P2P link with `peer`, to a server that takes them. */
  #report(peer, state) {
    if (peer === EDGE || !this.#reportsLinks() || this.#sessionId === null) return;
    this.#send({ command: 'p2p_link_state', id: this.#sessionId, peer_id: peer, state });
  }

  #dropSource() {
    const hadSource = this.#main !== null;
    this.#main?.close();
    this.#main = null;
    this.#stream = null;
    if (hadSource) this.#emit('source', this.#sourceOf(null));
  }

  /** The stream we play, once there is one (a relay asked for before our tracks arrived waits). */
  #streamToRelay() {
    return this.#stream ? Promise.resolve(this.#stream) : new Promise((resolve) => this.#streamWaiters.push(resolve));
  }

  // --- Relaying (host peer) --------------------------------------------------------------------

  /** `request_offer_p2p`: offers the stream we receive (edge or peer alike) to `client`. */
  #relayTo(host, client) {
    this.#closeRelay(client);
    // max-bundle: one transport for audio and video (every current browser bundles), so half
    // the candidates and ports.
    const link = new Link(client, { iceServers: this.#iceServers ?? this.#announcedIce ?? [], bundlePolicy: 'max-bundle' });
    this.#relays.set(client, link);
    link.onCandidate = (candidate) => this.#send({ command: 'candidate_p2p', id: host, peer_id: client, candidates: [candidate] });
    link.holdCandidates(); // candidate_p2p only once offer_p2p is out
    link.pc.onconnectionstatechange = () => this.#countRelaying();
    this.#offerTo(link, host).catch(() => this.#closeRelay(client, link));
  }

  async #offerTo(link, host) {
    const client = link.peer;
    const stream = await this.#streamToRelay();
    if (this.#relays.get(client) !== link) return; // the client left, or we asked again, meanwhile
    for (const track of stream.getTracks()) link.pc.addTrack(track, stream);
    const offer = await link.pc.createOffer();
    await link.pc.setLocalDescription(offer);
    if (this.#relays.get(client) !== link) return;
    this.#send({ command: 'offer_p2p', id: host, peer_id: client, sdp: { type: offer.type, sdp: offer.sdp } });
    link.releaseCandidates();
    link.watch(RELAY_LINK_TIMEOUT_MS, {
      up: () => this.#countRelaying(),
      // Tell the server: an OvenPlayer client never reports, and would wait on this link forever.
      down: () => {
        if (this.#relays.get(client) !== link) return;
        this.#report(client, FAILED);
        this.#closeRelay(client, link);
      },
    });
  }

  /** `answer_p2p`: the client's answer to our offer. */
  #answered(client, sdp) {
    const link = this.#relays.get(client);
    link?.setRemote(sdp).catch(() => this.#closeRelay(client, link));
  }

  /** Closes our relay to `client` (only if it is still `link`, when given). */
  #closeRelay(client, link = this.#relays.get(client)) {
    if (!link || this.#relays.get(client) !== link) return;
    link.close();
    this.#relays.delete(client);
    this.#countRelaying();
  }

  #closeRelays() {
    for (const link of this.#relays.values()) link.close();
    this.#relays.clear();
    this.#streamWaiters = [];
    this.#countRelaying();
  }

  #countRelaying() {
    const count = [...this.#relays.values()].filter((link) => link.isConnected()).length;
    if (count === this.#relaying) return;
    this.#relaying = count;
    this.#emit('relaying', count);
  }

  // --- The element and the events -------------------------------------------------------------

  /** Follows the element: `playing` when it plays, `paused` when the user pauses it. */
  #watchVideo() {
    const video = this.#video;
    const playing = () => {
      if (this.#wanted && this.#main) this.#setState('playing', this.#sourceOf(this.#main));
    };
    const paused = () => {
      // A new srcObject resets readyState before any pause it causes: only a pause of a
      // playing picture is the user's.
      if (this.#wanted && video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && this.#state === 'playing') this.#setState('paused', 'paused by the user');
    };
    video.addEventListener('playing', playing);
    video.addEventListener('pause', paused);
    return () => {
      video.removeEventListener('playing', playing);
      video.removeEventListener('pause', paused);
    };
  }

  #sourceOf(link) {
    if (!link) return { from: null, peerId: null };
    return link.peer === EDGE ? { from: 'edge', peerId: EDGE } : { from: 'peer', peerId: link.peer };
  }

  #setState(state, detail) {
    if (state === 'playing' && this.#state === 'playing') return; // the element says it again
    this.#state = state;
    this.#emit('state', state, detail);
  }

  #emit(event, ...args) {
    for (const fn of this.#listeners.get(event) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`P2PPlayer: a '${event}' listener threw`, e);
      }
    }
  }
}

/**
 * One RTCPeerConnection and what the signalling needs around it: the partner's id, candidates
 * held until the remote description is set (or until our offer is out), and a watchdog.
 */
class Link {
  /** Resolves once the remote description is set: candidates wait for it. */
  #remoteSet;
  #markRemoteSet;
  #held = null; // our candidates not to be sent yet
  #timer = null;
  #closed = false;
  onCandidate = () => {};

  constructor(peer, configuration) {
    this.peer = peer;
    this.pc = new RTCPeerConnection(configuration);
    this.#remoteSet = new Promise((resolve) => { this.#markRemoteSet = resolve; });
    this.pc.onicecandidate = ({ candidate }) => {
      if (!candidate || !candidate.candidate) return; // end of candidates: nothing to send
      if (this.#held) this.#held.push(candidate.toJSON());
      else this.onCandidate(candidate.toJSON());
    };
  }

  async setRemote(description) {
    await this.pc.setRemoteDescription(description);
    this.#markRemoteSet();
  }

  addCandidates(candidates) {
    for (const candidate of candidates) {
      if (!candidate?.candidate) continue;
      this.#remoteSet.then(() => this.pc.addIceCandidate(candidate)).catch(() => {
        // A candidate this browser cannot use (e.g. another address family): ICE goes on without it.
      });
    }
  }

  holdCandidates() {
    this.#held ??= [];
  }

  releaseCandidates() {
    const held = this.#held ?? [];
    this.#held = null;
    for (const candidate of held) this.onCandidate(candidate);
  }

  isConnected() {
    return !this.#closed && (this.pc.connectionState === 'connected' || ['connected', 'completed'].includes(this.pc.iceConnectionState));
  }

  /**
   * Calls `up` the first time the connection connects, and `down(why)` once if it fails, or is
   * not connected within `ms` of now or of going `disconnected` (a browser can wait tens of
   * seconds before it calls a silent path `failed`).
   */
  watch(ms, { up, down }) {
    let wasUp = false;
    const fail = (why) => {
      if (this.#closed) return;
      clearTimeout(this.#timer);
      down(why);
    };
    const arm = () => {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => fail(`not connected within ${ms} ms`), ms);
    };
    const check = () => {
      if (this.#closed) return;
      const ice = this.pc.iceConnectionState;
      if (this.isConnected()) {
        clearTimeout(this.#timer);
        this.#timer = null;
        if (!wasUp) up();
        wasUp = true;
      } else if (ice === 'failed' || this.pc.connectionState === 'failed') {
        fail('failed');
      } else if (ice === 'disconnected' && this.#timer === null) {
        arm();
      }
    };
    this.pc.addEventListener('iceconnectionstatechange', check);
    this.pc.addEventListener('connectionstatechange', check);
    arm();
  }

  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.pc.close();
  }
}

/** Every `address:port` the offer's candidates name (its `candidates` and its SDP's). */
function candidateAddresses(offer) {
  const lines = [
    ...(Array.isArray(offer.candidates) ? offer.candidates.map((c) => c?.candidate ?? '') : []),
    ...String(offer.sdp?.sdp ?? '').split(/\r?\n/).filter((line) => line.startsWith('a=candidate:')),
  ];
  // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
  return new Set(lines.map((line) => line.trim().split(/\s+/)).filter((f) => f.length >= 6).map((f) => `${f[4]}:${f[5]}`));
}

/** `servers` without the STUN/TURN URLs at one of `addresses` (see #iceServersFrom). */
function withoutAddresses(servers, addresses) {
  const at = (url) => url.replace(/^(stuns?|turns?):/, '').replace(/\?.*$/, '').replace(/^\[|\](?=:)/g, '');
  return servers
    .map((server) => ({ ...server, urls: [server.urls].flat().filter((url) => !addresses.has(at(url))) }))
    .filter((server) => server.urls.length > 0);
}

/** OME names a TURN user `user_name`; the browser wants `username`. */
/**
 * The signalling URL with `p2p_stun=1`: this player's P2P connections use STUN, so the server may
 * pair it across networks before its relay has shown a public candidate (OME ignores it).
 */
function withStunFlag(url) {
  const u = new URL(url);
  if (!u.searchParams.has('p2p_stun')) u.searchParams.set('p2p_stun', '1');
  return u.toString();
}

function toIceServer({ urls, username, user_name: userName, credential }) {
  return { urls, username: username ?? userName, credential };
}

function describe(peer) {
  return peer === EDGE ? 'the edge' : `peer ${peer}`;
}

export default P2PPlayer;
