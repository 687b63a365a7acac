// What every browser script here shares: the User-Agents the classification rules need, how
// Chromium is started, and the log, sleep and polling helpers. Importing it runs nothing.

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
export const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
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
