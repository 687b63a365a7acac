// TLS in real Chromium (issue 24, item 1): the unmodified OvenPlayer 0.10.54 on an https page
// plays over wss from the host's <TLSPort>; the certificate is renewed on disk while it plays:
// it plays on, a new TLS connection gets the new certificate, and a second page plays over it.
//
// Chromium runs with --ignore-certificate-errors: trusting a test CA needs an NSS database;
// which certificate the host serves is checked here with Node's TLS client trusting the CA.
//
// Run by tests/tests/tls.rs (`ovenplayer_0_10_54_plays_over_wss_from_an_https_page_across_a_renewal`)
// inside its namespace: node tls.mjs
// Environment: HOST_BIN, HOST_CONFIG, TLS_PORT, CA (PEM file), CERT and KEY (the files the
// config names), NEXT_CERT and NEXT_KEY (the renewal), HOST_ADDR (default 192.0.2.1), CHROMIUM,
// BROWSER_ECHO=1. Prints `scenario tls: passed`; exits non-zero with the reason otherwise.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, renameSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS, DESKTOP_CHROME, log, sleep, waitFor } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const ADDR = env.HOST_ADDR ?? '192.0.2.1';

const page = (wsUrl) => `<!doctype html><html><body><div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }] });</script>
</body></html>`;

const frames = () => [...document.querySelectorAll('video')]
  .reduce((n, v) => n + (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0), 0);

/** The fingerprint of the certificate a new TLS connection to the host gets (trusting only the CA). */
const served = () => new Promise((resolve, reject) => {
  const socket = tls.connect({ host: ADDR, port: Number(env.TLS_PORT), ca: readFileSync(env.CA), servername: undefined, checkServerIdentity: () => undefined }, () => {
    resolve(socket.getPeerCertificate().fingerprint256);
    socket.end();
  });
  socket.on('error', reject);
});

const fingerprint = (file) => new X509Certificate(readFileSync(file)).fingerprint256;

async function main() {
  const host = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], { env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let hostLog = '';
  for (const pipe of [host.stdout, host.stderr]) pipe.on('data', (d) => { hostLog += d; });
  const browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: [...CHROMIUM_ARGS, '--ignore-certificate-errors'] });
  try {
    await waitFor('the host to serve', 20000, async () => hostLog.includes('waiting for viewers'));
    const script = readFileSync(path.join(here, 'node_modules', 'ovenplayer-0.10.54', 'dist', 'ovenplayer.js'));
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const open = async () => {
      const viewer = await context.newPage();
      if (env.BROWSER_ECHO) viewer.on('console', (m) => log(`console: ${m.text()}`));
      await viewer.route('https://player.test/**', (route) => {
        if (new URL(route.request().url()).pathname === '/ovenplayer.js') return route.fulfill({ body: script, contentType: 'text/javascript' });
        return route.fulfill({ body: page(`wss://${ADDR}:${env.TLS_PORT}/app/stream?p2p=0`), contentType: 'text/html' });
      });
      await viewer.goto('https://player.test/');
      if (!(await viewer.evaluate(() => window.isSecureContext))) throw new Error('the page is not a secure context');
      await waitFor('the first frame over wss', 30000, async () => (await viewer.evaluate(frames)) > 0);
      return viewer;
    };

    if ((await served()) !== fingerprint(env.CERT)) throw new Error('the host does not serve the configured certificate');
    const first = await open();
    log('OvenPlayer 0.10.54 plays over wss from an https page');

    // The renewal, as certbot writes it: each file replaced whole.
    for (const [from, to] of [[env.NEXT_CERT, env.CERT], [env.NEXT_KEY, env.KEY]]) {
      copyFileSync(from, `${to}.new`);
      renameSync(`${to}.new`, to);
    }
    const before = await first.evaluate(frames);
    await waitFor('the renewed certificate on new connections', 10000, async () => (await served()) === fingerprint(env.NEXT_CERT));
    log('new connections get the renewed certificate');
    await sleep(2000);
    const after = await first.evaluate(frames);
    if (after < before + 30) throw new Error(`the playing viewer stalled across the renewal: ${before} -> ${after} frames`);
    log(`the playing viewer plays on: ${before} -> ${after} frames`);
    await open();
    log('a new viewer plays over the renewed certificate');
    console.log('scenario tls: passed');
  } catch (e) {
    console.log(`scenario tls: FAILED: ${e.message}\n--- host log ---\n${hostLog}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    host.kill('SIGTERM');
  }
}

await main();
