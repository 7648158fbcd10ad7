#!/bin/sh
# Serves /www on ${BIND:-127.0.0.1}:$PORT. GET / names the replica (REPLICA, VERSION, PORT);
# GET /health answers 200 while /www/health exists: `docker exec C rm /www/health` turns the
# container unhealthy, `touch` heals it, HEALTHY=0 starts it unhealthy.
# With arguments, runs them instead (e.g. `sleep 60`).
# sh is PID 1 and traps TERM so `docker stop` ends it at once instead of waiting for SIGKILL.
if [ "$#" -gt 0 ]; then
  exec "$@"
fi
mkdir -p /www
printf 'replica=%s version=%s port=%s\n' "${REPLICA:-unnamed}" "${VERSION:-1}" "$PORT" > /www/index.html
if [ "${HEALTHY:-1}" = 1 ]; then
  echo ok > /www/health
fi
httpd -f -p "${BIND:-127.0.0.1}:$PORT" -h /www &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"; exit 0' TERM INT
wait "$pid"
