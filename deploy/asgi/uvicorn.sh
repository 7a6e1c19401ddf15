#!/bin/sh
# Start the ASGI application under uvicorn with the options resumable uploads need.
# docs/deploy.md explains each; tests/deploy/test_asgi_recipe.py runs this very script.
#
#   DJR_ASGI_APP      ASGI application path         (default project.asgi:application)
#   DJR_APP_DIR       directory added to sys.path   (default example)
#   HOST / PORT       listen address                (default 0.0.0.0 / 8000)
#   WEB_CONCURRENCY   uvicorn worker processes      (default 1: scale with processes/pods)
#   FORWARDED_ALLOW_IPS  proxies trusted for X-Forwarded-* (default 127.0.0.1)
set -eu
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" -m uvicorn "${DJR_ASGI_APP:-project.asgi:application}" \
    --app-dir "${DJR_APP_DIR:-example}" \
    --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
    --workers "${WEB_CONCURRENCY:-1}" \
    --ws websockets-sansio \
    --ws-per-message-deflate false \
    --ws-max-size 33554432 \
    --ws-ping-interval 20 --ws-ping-timeout 30 \
    --timeout-graceful-shutdown 30 \
    --lifespan off \
    --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
    --no-server-header
