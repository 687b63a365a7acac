#!/usr/bin/env bash
# Regenerates the built-in test clip: 4 s of VP8 (640x360, 30 fps, a keyframe every 0.5 s, ~1 Mbit/s)
# and 4 s of Opus (48 kHz stereo, one 20 ms packet per Ogg page). Needs ffmpeg (Debian's 5.1 works).
# The host loops it with continuous RTP timestamps; the clip's length must be whole video frames.
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=640x360:rate=30,noise=alls=12:allf=t,drawtext=text='p2p-host test stream':x=20:y=20:fontsize=28:fontcolor=white:box=1:boxcolor=black@0.5" \
  -t 4 -c:v libvpx -deadline good -cpu-used 4 -b:v 1M -minrate 1M -maxrate 1M -g 15 -keyint_min 15 \
  -auto-alt-ref 0 -lag-in-frames 0 test-clip.ivf
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo" \
  -t 4 -c:a libopus -b:a 64k -frame_duration 20 -page_duration 20000 test-clip.opus
ls -l test-clip.ivf test-clip.opus
