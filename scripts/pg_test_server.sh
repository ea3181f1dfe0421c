#!/usr/bin/env bash
# A throw-away PostgreSQL server for the optimize tests (issue 12): Debian's package, a fresh
# cluster in a temp dir, listening on loopback only, password (scram) auth for one user.
#   start DIR PORT  -> prints the URL (postgresql+psycopg://perpbot:perpbot@127.0.0.1:PORT/perpbot)
#   stop DIR
# Root cannot run postgres, so initdb/pg_ctl run as the `postgres` system user when we are root.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/pg_ctl" ] || { echo "PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
  start)
    port=${3:?port}
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    echo perpbot >"$dir/pw" && [ "$(id -u)" = 0 ] && chown postgres "$dir/pw"
    as_pg "$bin/initdb" -D "$dir/db" -U perpbot --pwfile="$dir/pw" --auth-host=scram-sha-256 \
      --auth-local=trust -E UTF8 >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/db" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null
    as_pg "$bin/createdb" -h "$dir" -p "$port" -U perpbot perpbot
    echo "postgresql+psycopg://perpbot:perpbot@127.0.0.1:$port/perpbot"
    ;;
  stop)
    [ -d "$dir/db" ] && as_pg "$bin/pg_ctl" -D "$dir/db" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
