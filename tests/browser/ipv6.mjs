// IPv6 in real Chromium (issue 24, item 4): the unmodified OvenPlayer 0.10.54 plays from the edge
// over an IPv6-only path. The namespace's firewall drops every IPv4 packet; the host has `*` and
// `[::]` ICE candidates and signals on <IP>*</IP><IP>::</IP>, so its offer names both families'
// addresses and only the IPv6 ones work. The page is opened at http://[HOST_ADDR6]:PORT/ and its
// signalling goes to ws://[HOST_ADDR6]:PORT/. Checks that the offer had IPv6 candidates, that
// Chromium's selected pair is IPv6 to the host's address, and that frames are shown.
//
// Run by tests/tests/browser.rs (`an_ovenplayer_0_10_54_viewer_plays_over_an_ipv6_only_path`)
// inside its namespace: node ipv6.mjs
// Environment: HOST_BIN, HOST_CONFIG, HOST_PORT, HOST_ADDR6 (default 2001:db8::1), CHROMIUM,
// BROWSER_ECHO=1. Prints `FIRST_FRAME_MS n` and `scenario ipv6: passed`; exits non-zero with the
// reason otherwise.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { CHROMIUM_ARGS, DESKTOP_CHROME, log, waitFor } from './common.mjs';
import { openPlayer } from './instrument.mjs';

const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
const ADDR6 = env.HOST_ADDR6 ?? '2001:db8::1';
/** Chromium's Local Network Access checks block the page's WebSocket to 2001:db8::1
 *  (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS: the documentation prefix counts as a local
 *  network, the test's page as public); a real site and its host are both public. */
const ARGS = CHROMIUM_ARGS.map((a) => (a.startsWith('--disable-features=') ? `${a},LocalNetworkAccessChecks` : a));

async function main() {
  const host = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], { env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let hostLog = '';
  for (const pipe of [host.stdout, host.stderr]) pipe.on('data', (d) => { hostLog += d; });
  const browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: ARGS });
  try {
    await waitFor('the host to serve', 20000, async () => hostLog.includes('waiting for viewers'));
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const opened = Date.now();
    const origin = `[${ADDR6}]:${PORT}`;
    const viewer = await openPlayer(context, origin, `ws://${origin}/app/stream?p2p=0`);
    if (env.BROWSER_ECHO) viewer.on('console', (m) => log(`console: ${m.text()}`));
    await waitFor('the first frame over IPv6', 30000, async () => (await viewer.evaluate(() => window.__frames())) > 0);
    const firstFrameMs = Date.now() - opened;
    const offer = (await viewer.evaluate(() => window.__offers))[0];
    const addresses = (offer.candidates ?? []).map((c) => c.candidate.split(' ')[4]);
    log(`offered candidate addresses: ${addresses.join(' ')}`);
    if (!addresses.includes(ADDR6) || !addresses.some((a) => !a.includes(':'))) throw new Error(`the offer should name both families: ${addresses}`);
    const pair = await viewer.evaluate(() => window.__selectedPair());
    log(`selected pair: ${JSON.stringify(pair)}`);
    if (!pair || pair.remote !== ADDR6 || !pair.local.includes(':')) throw new Error(`the selected pair is not IPv6 to ${ADDR6}: ${JSON.stringify(pair)}`);
    await waitFor('60 frames', 20000, async () => (await viewer.evaluate(() => window.__frames())) >= 60);
    console.log(`FIRST_FRAME_MS ${firstFrameMs}`);
    console.log('scenario ipv6: passed');
  } catch (e) {
    console.log(`scenario ipv6: FAILED: ${e.message}\n--- host log ---\n${hostLog}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    host.kill('SIGTERM');
  }
}

await main();
