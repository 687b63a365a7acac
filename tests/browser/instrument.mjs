// What the issue 24 scenarios (ice-tcp.mjs, ipv6.mjs, bench-transport-cpu.mjs) put in their pages: an init
// script that records every RTCPeerConnection (to read its selected pair) and the offers the
// signalling brought, and a page playing one stream with the unmodified OvenPlayer 0.10.54.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** OvenPlayer 0.10.54's script, served to the pages as /ovenplayer.js. */
export const OVENPLAYER = readFileSync(path.join(here, 'node_modules', 'ovenplayer-0.10.54', 'dist', 'ovenplayer.js'));

/** Run in each page before its scripts: window.__selectedPair(), window.__frames(), window.__offers. */
export const INSTRUMENT = () => {
  window.__pcs = [];
  window.__offers = [];
  const Pc = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Pc {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        const m = JSON.parse(e.data);
        if (m.command === 'offer') window.__offers.push(m);
      });
    }
  };
  window.__selectedPair = async () => {
    for (const pc of window.__pcs) {
      const stats = [...(await pc.getStats()).values()];
      // The transport's selected pair (a TCP pair may be selected without being marked nominated).
      const selected = stats.find((s) => s.type === 'transport')?.selectedCandidatePairId;
      const pair = stats.find((s) => s.id === selected) ?? stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      if (!pair) continue;
      const local = stats.find((s) => s.id === pair.localCandidateId);
      const remote = stats.find((s) => s.id === pair.remoteCandidateId);
      return { protocol: remote.protocol, local: local.address, remote: remote.address, remotePort: remote.port };
    }
    return null;
  };
  window.__frames = () => [...document.querySelectorAll('video')]
    .reduce((n, v) => n + (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0), 0);
};

/** A page playing `wsUrl` with OvenPlayer 0.10.54 (loaded from /ovenplayer.js). */
export const playerPage = (wsUrl) => `<!doctype html><html><body><div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }] });</script>
</body></html>`;

/** Opens a page of `context` at http://ORIGIN/ playing `wsUrl`: ORIGIN's page and /ovenplayer.js
 *  are served by the test (ORIGIN may be the host's address: the page then comes from there). */
export async function openPlayer(context, origin, wsUrl) {
  const page = await context.newPage();
  await page.addInitScript(INSTRUMENT);
  // A predicate, not a glob: an IPv6 origin's brackets would be a glob's character class.
  await page.route((url) => url.host === origin, (route) => {
    if (new URL(route.request().url()).pathname === '/ovenplayer.js') return route.fulfill({ body: OVENPLAYER, contentType: 'text/javascript' });
    return route.fulfill({ body: playerPage(wsUrl), contentType: 'text/html' });
  });
  await page.goto(`http://${origin}/`);
  return page;
}
