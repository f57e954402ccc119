#!/usr/bin/env bash
# Smoke-test the image as a small deployment on this host (host networking, as WebRTC needs):
# Redis, `merclip ingest` and two `merclip infer` workers, each a container of the image; one
# session streamed by `merclip stream-file` from a container too; its events counted in Redis;
# then the ingest node drained with SIGUSR2 and seen to exit 0.
#   bash scripts/smoke_image.sh VIDEO [TAG]      # VIDEO: any file with audio and/or video
set -euo pipefail
video=$(realpath "$1")
tag=${2:-localhost/merclip-live:latest}
engine=$(command -v podman || command -v docker)
rport=${REDIS_PORT:-6391}
hport=${HTTP_PORT:-18081}
name=merclip-smoke-$$
url=redis://127.0.0.1:$rport/0
cleanup() { "$engine" rm -f "$name-redis" "$name-ingest" "$name-infer1" "$name-infer2" >/dev/null 2>&1 || true; }
trap cleanup EXIT
start() { "$engine" run -d --network host --name "$@" >/dev/null; }
since() { echo "$(( $(date +%s) - t0 )) s"; }

t0=$(date +%s)
start "$name-redis" --entrypoint redis-server "$tag" --bind 127.0.0.1 --port "$rport" --save '' --appendonly no
start "$name-infer1" "$tag" infer --redis-url "$url" --consumer smoke1
start "$name-infer2" "$tag" infer --redis-url "$url" --consumer smoke2
start "$name-ingest" "$tag" ingest --redis-url "$url" --host 127.0.0.1 --port "$hport"
for _ in $(seq 300); do
  "$engine" logs "$name-ingest" 2>&1 | grep -q "serving at" && break
  sleep 1
done
"$engine" logs "$name-ingest" 2>&1 | grep -q "serving at" || { "$engine" logs "$name-ingest"; exit 1; }
echo "smoke: ingest serving after $(since)"

"$engine" run --rm --network host -v "$video:/media/clip:ro" "$tag" \
  stream-file /media/clip --url "http://127.0.0.1:$hport/" --session smoke
echo "smoke: streamed after $(since)"
rcli() { "$engine" run --rm --network host --entrypoint redis-cli "$tag" -p "$rport" "$@"; }
events=0
for _ in $(seq 60); do
  events=$(rcli XLEN 'merclip:{smoke}:events')
  [ "$events" -gt 0 ] && [ "$(rcli XLEN merclip:windows)" = 0 ] && break
  sleep 1
done
echo "smoke: $events events for session smoke; consumers: $(rcli XINFO CONSUMERS merclip:windows infer | grep -A1 -x name | grep smoke | tr '\n' ' ')"
[ "$events" -gt 0 ] || { "$engine" logs "$name-infer1"; exit 1; }

"$engine" kill --signal USR2 "$name-ingest" >/dev/null
code=$("$engine" wait "$name-ingest")
echo "smoke: ingest drained and exited $code after $(since)"
[ "$code" = 0 ]
