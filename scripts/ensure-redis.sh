#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 for the Redis tests.
# Starts `redis-server` itself when none answers and the binary exists.
# With no Redis at all the Redis tests skip loudly, except under CI=true.
set -u
ping() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 1 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping; then
  echo "redis: answering on 127.0.0.1:6379"
  exit 0
fi
if command -v redis-server >/dev/null 2>&1; then
  echo "redis: none answering, starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/llmguard-redis.log"
  for _ in $(seq 1 50); do ping && exit 0; sleep 0.1; done
  echo "redis: redis-server did not answer after 5 s" >&2
  exit 1
fi
if [ "${CI:-}" = "true" ]; then
  echo "redis: no Redis and no redis-server binary, and CI=true: the Redis tests must run" >&2
  exit 1
fi
echo "!!! redis: no Redis on 127.0.0.1:6379 and no redis-server binary: Redis tests will SKIP !!!" >&2
exit 0
