// ICE over TCP in real Chromium (issue 24, item 2): the unmodified OvenPlayer 0.10.54 plays from
// the edge in a network namespace whose firewall drops every UDP packet, so the only pair that
// works is Chromium's active TCP candidate to the edge's passive one. Checks that the player got
// TCP candidates as the host sent them, that its selected pair is TCP, and that frames are shown.
//
// Run by tests/tests/browser.rs (`an_ovenplayer_0_10_54_viewer_whose_network_drops_all_udp_plays_over_ice_tcp`)
// inside its namespace: node ice-tcp.mjs
// Environment: HOST_BIN, HOST_CONFIG, HOST_PORT, HOST_ADDR (default 192.0.2.1), CHROMIUM,
// BROWSER_ECHO=1. Prints `FIRST_FRAME_MS n` (page load to first frame) and
// `scenario ice-tcp: passed`; exits non-zero with the reason otherwise.

import { spawn } from 'node:child_process';
import { DESKTOP_CHROME, launchChromium, log, waitFor } from './common.mjs';
import { openPlayer } from './instrument.mjs';

const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
const ADDR = env.HOST_ADDR ?? '192.0.2.1';

async function main() {
  const host = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], { env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let hostLog = '';
  for (const pipe of [host.stdout, host.stderr]) pipe.on('data', (d) => { hostLog += d; });
  const browser = await launchChromium();
  try {
    await waitFor('the host to serve', 20000, async () => hostLog.includes('waiting for viewers'));
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const opened = Date.now();
    const viewer = await openPlayer(context, 'player.test', `ws://${ADDR}:${PORT}/app/stream?p2p=0`);
    if (env.BROWSER_ECHO) viewer.on('console', (m) => log(`console: ${m.text()}`));
    await waitFor('the first frame over ICE-TCP', 30000, async () => (await viewer.evaluate(() => window.__frames())) > 0);
    const firstFrameMs = Date.now() - opened;
    const offer = (await viewer.evaluate(() => window.__offers))[0];
    const tcp = (offer.candidates ?? []).map((c) => c.candidate).filter((c) => / tcp /.test(c));
    log(`offered TCP candidates: ${tcp.join(' | ')}`);
    if (tcp.length === 0 || !tcp.every((c) => c.endsWith('tcptype passive'))) throw new Error(`no passive TCP candidate offered: ${JSON.stringify(offer.candidates)}`);
    const pair = await viewer.evaluate(() => window.__selectedPair());
    log(`selected pair: ${JSON.stringify(pair)}`);
    if (!pair || pair.protocol !== 'tcp') throw new Error(`the selected pair is not TCP: ${JSON.stringify(pair)}`);
    await waitFor('60 frames', 20000, async () => (await viewer.evaluate(() => window.__frames())) >= 60);
    console.log(`FIRST_FRAME_MS ${firstFrameMs}`);
    console.log('scenario ice-tcp: passed');
  } catch (e) {
    console.log(`scenario ice-tcp: FAILED: ${e.message}\n--- host log ---\n${hostLog}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    host.kill('SIGTERM');
  }
}

await main();
