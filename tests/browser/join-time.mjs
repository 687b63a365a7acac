// Join time in real Chromium: from the page's `request_offer` to the first video frame shown, on
// the host's own page (`http://ADDR:PORT/`, which plays `app/stream` from the edge), and how far
// behind live the picture is afterwards.
//
// Run by `load join --browser` (tests/src/bin/load.rs) inside its network namespace, with the
// hosts and their ffmpeg feed already running:
//   node join-time.mjs
// Environment:
//   HOSTS     JSON [{"name": "before", "url": "http://192.0.2.1:PORT/"}, ...], joined in turn
//   ROUNDS    rounds (each joins every host once; a fresh browser context per join)
//   GOP_MS    before each join the script waits a random time, uniform in [0, GOP_MS)
//   WATCH_MS  how long each viewer plays, from its page's load (the page sends request_offer then)
//   CHROMIUM  the browser (default /usr/bin/chromium); BROWSER_ECHO=1 echoes the pages' consoles
// Prints one line `SAMPLE {json}` per join (times in ms, relative to the request_offer).
//
// How it measures, in the page (performance.now() throughout):
// - request_offer and answer: WebSocket.prototype.send is wrapped; offer: a message listener;
//   connected: the RTCPeerConnection's connectionstatechange (the constructor is wrapped);
// - the first frame: the first `video.requestVideoFrameCallback` (its presentationTime), and the
//   first time `getVideoPlaybackQuality().totalVideoFrames > 0` (polled every 4 ms) as a check;
// - behind live: every presented frame's rtpTimestamp and receiveTime (rVFC metadata). The live
//   edge maps an RTP timestamp to the earliest arrival seen relative to it,
//   live(ts) = min over frames (receiveTime - ts/90), since frames sent live arrive at once and
//   frames from the keyframe cache arrive early in wall time but late relative to their
//   timestamps; a frame shown at presentationTime is `presentationTime - live(ts)` behind live.

import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, sleep } from './common.mjs';

const env = process.env;
const HOSTS = JSON.parse(env.HOSTS ?? '[]');
const ROUNDS = Number(env.ROUNDS ?? 5);
const GOP_MS = Number(env.GOP_MS ?? 4000);
const WATCH_MS = Number(env.WATCH_MS ?? 15000);

const INSTRUMENT = () => {
  const at = () => performance.now();
  const t = (window.__join = { frames: [] });
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try {
          if (JSON.parse(e.data).command === 'offer') t.offer ??= at();
        } catch { /* not JSON */ }
      });
    }
    send(data) {
      try {
        const command = JSON.parse(data).command;
        if (command === 'request_offer') t.request ??= at();
        if (command === 'answer') t.answer ??= at();
      } catch { /* not JSON */ }
      return super.send(data);
    }
  };
  const Connection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Connection {
    constructor(...args) {
      super(...args);
      window.__pc = this;
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') t.connected ??= at();
      });
      this.addEventListener('track', () => { t.track ??= at(); });
    }
  };
  const watch = () => {
    const video = document.querySelector('video');
    if (!video) return;
    const onFrame = (now, m) => {
      t.frames.push({ now, presented: m.presentationTime, expected: m.expectedDisplayTime, received: m.receiveTime, rtp: m.rtpTimestamp, count: m.presentedFrames });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.addEventListener('playing', () => { t.playing ??= at(); });
    const poll = setInterval(() => {
      if (video.getVideoPlaybackQuality().totalVideoFrames > 0) {
        t.quality ??= at();
        clearInterval(poll);
      }
    }, 4);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', watch);
  else watch();
};

/** What the page saw, plus the inbound video stream's stats. */
async function collect(page) {
  return page.evaluate(async () => {
    const t = window.__join;
    let inbound = null;
    if (window.__pc) {
      const report = await window.__pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
      });
    }
    return { ...t, inbound };
  });
}

/** Milliseconds of RTP time (90 kHz) from `from` to `ts`, across a wrap. */
const rtpMs = (ts, from) => {
  let d = (ts - from) >>> 0;
  if (d >= 2 ** 31) d -= 2 ** 32;
  return d / 90;
};

function summarize(host, round, waited, t) {
  const rel = (x) => (x === undefined || x === null || t.request === undefined ? null : x - t.request);
  const frames = t.frames.filter((f) => f.rtp !== undefined && f.received !== undefined);
  const sample = {
    host, round, waited_ms: Math.round(waited),
    offer: rel(t.offer), answer: rel(t.answer), connected: rel(t.connected), track: rel(t.track),
    first_frame: rel(t.frames[0]?.presented), first_frame_callback: rel(t.frames[0]?.now),
    first_frame_quality: rel(t.quality), playing: rel(t.playing),
    first_frame_received: rel(t.frames[0]?.received),
    frames_presented: t.frames.length,
  };
  if (frames.length > 0) {
    const ts0 = frames[0].rtp;
    const live = Math.min(...frames.map((f) => f.received - rtpMs(f.rtp, ts0)));
    const behind = (f) => f.presented - (live + rtpMs(f.rtp, ts0));
    sample.first_frame_behind_live = behind(frames[0]);
    // How old the first frame's picture was when it arrived (0 when it was sent live).
    sample.first_frame_age_on_arrival = frames[0].received - (live + rtpMs(frames[0].rtp, ts0));
    const first = frames[0].presented;
    for (const s of [1, 2, 4, 6, 8, 10, 12]) {
      const f = frames.find((f) => f.presented >= first + s * 1000);
      if (f) sample[`behind_live_${s}s`] = behind(f);
    }
    sample.behind_live_last = behind(frames[frames.length - 1]);
    // When the picture first came within 100 ms of live (a burst played faster than real time
    // catches up; one played at the source's pace never does).
    const caught = frames.find((f) => behind(f) < 100);
    sample.within_100ms_of_live = caught ? caught.presented - t.request : null;
    sample.watched_ms = frames[frames.length - 1].presented - first;
    // Media time played per wall time over the first second (1.0 = real time).
    const f1 = frames.find((f) => f.presented >= first + 1000);
    if (f1) sample.playout_rate_first_s = rtpMs(f1.rtp, ts0) / (f1.presented - first);
  }
  const s = t.inbound;
  if (s) {
    sample.inbound = {
      packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, nackCount: s.nackCount, pliCount: s.pliCount,
      framesReceived: s.framesReceived, framesDecoded: s.framesDecoded, framesDropped: s.framesDropped,
      keyFramesDecoded: s.keyFramesDecoded, freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
      jitterBufferDelayPerFrameMs: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : null,
      jitterBufferTargetPerFrameMs: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferTargetDelay) / s.jitterBufferEmittedCount : null,
    };
  }
  return sample;
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const { name, url } of HOSTS) {
      const waited = Math.random() * GOP_MS;
      await sleep(waited);
      const context = await browser.newContext();
      const page = await context.newPage();
      if (env.BROWSER_ECHO) page.on('console', (m) => console.error(`[${name}] ${m.text()}`));
      page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
      await page.addInitScript(INSTRUMENT);
      await page.goto(url);
      const started = Date.now();
      // The page sends request_offer as its socket opens, right after the load.
      await sleep(Math.max(0, WATCH_MS - (Date.now() - started)));
      const sample = summarize(name, round, waited, await collect(page));
      console.log(`SAMPLE ${JSON.stringify(sample)}`);
      await context.close();
    }
  }
} finally {
  await browser.close();
}
