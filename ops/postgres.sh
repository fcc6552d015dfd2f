#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests.
#   ops/postgres.sh start DIR [--fast]   initdb (once) and start on a free loopback port; prints the superuser's
#                                        URL of the database `allot`
#   ops/postgres.sh roles DIR            makes (once) the roles allotd runs as: allot_owner, which owns `allot` and
#                                        runs migrations, and allot_app, which serves; prints their two URLs
#   ops/postgres.sh standby DIR PRIMARY  a synchronous streaming standby of the cluster in PRIMARY (PostgreSQL's own
#                                        replication: pg_basebackup, then the primary waits for it at every commit);
#                                        started on a free port; prints its superuser URL
#   ops/postgres.sh promote DIR          promotes the standby in DIR to a primary (pg_ctl promote)
#   ops/postgres.sh stop DIR             fast shutdown
#   ops/postgres.sh destroy DIR          stop, and delete the cluster's data
# Every role has a random password (scram-sha-256, also on loopback: a GPU node's ranks share its network, so
# "trust" would let any of them in as the superuser); the URLs carry them, so keep their files 0600.
# The server refuses to run as root, so as root it runs as the `postgres` user, with data, log and socket in
# a folder under /tmp that this user owns (the checkout may be where `postgres` cannot enter); DIR then keeps
# only a link to it. --fast turns durability off (fsync, synchronous_commit): for tests only.
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "postgres.sh: PostgreSQL server binaries not found (install postgresql)" >&2; exit 1; }

cmd=${1:-}; dir=${2:-}
usage="usage: $0 start|roles|standby|promote|stop|destroy DIR [--fast | PRIMARY]"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PGPASSWORD="${PGPASSWORD:-}" "$@"; else "$@"; fi; }
secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }

# Where the cluster lives: DIR itself, or (as root) a postgres-owned folder under /tmp that DIR links to.
home="$dir/cluster"
if [ "$(id -u)" = 0 ]; then
  if [ ! -L "$home" ]; then
    rm -rf "$home"
    target=$(mktemp -d /tmp/allot-pg.XXXXXX)
    chown postgres:postgres "$target"
    ln -s "$target" "$home"
  fi
  home=$(readlink "$home")
  [ -d "$home" ] || { mkdir -p "$home"; chown postgres:postgres "$home"; }
fi

case "$cmd" in
start)
  if [ ! -f "$home/data/PG_VERSION" ]; then
    secret | as_pg tee "$home/superuser.password" >/dev/null
    chmod 0600 "$home/superuser.password"
    as_pg "$PGBIN/initdb" -D "$home/data" -U postgres --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
      --pwfile="$home/superuser.password" -E UTF8 --locale=C.UTF-8 >"$home/initdb.log" 2>&1 \
      || { cat "$home/initdb.log" >&2; exit 1; }
  fi
  [ -f "$home/superuser.password" ] || { echo "postgres.sh: $dir was made without passwords by an older postgres.sh: ops/postgres.sh destroy $dir" >&2; exit 1; }
  export PGPASSWORD
  PGPASSWORD=$(cat "$home/superuser.password")
  if as_pg "$PGBIN/pg_ctl" -D "$home/data" status >/dev/null 2>&1; then
    port=$(cat "$home/port")
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    opts="-c listen_addresses=127.0.0.1 -p $port -k $home -c max_connections=200"
    if [ "${3:-}" = "--fast" ]; then opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"; fi
    as_pg "$PGBIN/pg_ctl" -D "$home/data" -l "$home/server.log" -o "$opts" -w -t 60 start >/dev/null \
      || { cat "$home/server.log" >&2; exit 1; }
    echo "$port" | as_pg tee "$home/port" >/dev/null
  fi
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='allot'" | grep -q 1 \
    || as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres allot
  echo "postgres://postgres:$PGPASSWORD@127.0.0.1:$port/allot"
  ;;
roles)
  export PGPASSWORD
  PGPASSWORD=$(cat "$home/superuser.password")
  port=$(cat "$home/port")
  for role in allot_owner allot_app; do
    if [ ! -f "$home/$role.password" ]; then
      secret | as_pg tee "$home/$role.password" >/dev/null
      chmod 0600 "$home/$role.password"
      as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc \
        "DO \$\$ BEGIN CREATE ROLE $role LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
         ALTER ROLE $role PASSWORD '$(cat "$home/$role.password")'" >/dev/null
    fi
  done
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc "ALTER DATABASE allot OWNER TO allot_owner" >/dev/null
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d allot -qtAc "ALTER SCHEMA public OWNER TO allot_owner" >/dev/null
  echo "postgres://allot_owner:$(cat "$home/allot_owner.password")@127.0.0.1:$port/allot"
  echo "postgres://allot_app:$(cat "$home/allot_app.password")@127.0.0.1:$port/allot"
  ;;
standby)
  primary=${3:-}
  [ -n "$primary" ] && [ -f "$primary/cluster/superuser.password" ] || { echo "postgres.sh standby: $primary is no cluster of postgres.sh start" >&2; exit 2; }
  primary_home=$(readlink -f "$primary/cluster")
  export PGPASSWORD
  PGPASSWORD=$(cat "$primary_home/superuser.password")
  primary_port=$(cat "$primary_home/port")
  name=allot_standby
  if [ ! -f "$home/data/PG_VERSION" ]; then
    as_pg install -m 0600 "$primary_home/superuser.password" "$home/superuser.password"
    # -R writes standby.signal and primary_conninfo (with application_name, which synchronous_standby_names names).
    as_pg "$PGBIN/pg_basebackup" -d "host=127.0.0.1 port=$primary_port user=postgres application_name=$name" \
      -D "$home/data" -R -X stream -c fast >"$home/basebackup.log" 2>&1 || { cat "$home/basebackup.log" >&2; exit 1; }
  fi
  if ! as_pg "$PGBIN/pg_ctl" -D "$home/data" status >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$PGBIN/pg_ctl" -D "$home/data" -l "$home/server.log" -o "-c listen_addresses=127.0.0.1 -p $port -k $home -c max_connections=200" \
      -w -t 60 start >/dev/null || { cat "$home/server.log" >&2; exit 1; }
    echo "$port" | as_pg tee "$home/port" >/dev/null
  fi
  port=$(cat "$home/port")
  # Every commit on the primary now waits until the standby has it on disk: a promoted standby lost nothing.
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres -qtAc \
    "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ($name)'" -c "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 1 300); do
    state=$(as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres -qtAc \
      "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$name'")
    [ "$state" = sync ] && break
    sleep 0.1
  done
  [ "$state" = sync ] || { echo "postgres.sh standby: the standby did not become synchronous (state '$state')" >&2; exit 1; }
  echo "postgres://postgres:$PGPASSWORD@127.0.0.1:$port/allot"
  ;;
promote)
  as_pg "$PGBIN/pg_ctl" -D "$home/data" -w -t 60 promote >/dev/null
  # The new primary has no standby of its own yet: were it to wait for one, no commit would return.
  export PGPASSWORD
  PGPASSWORD=$(cat "$home/superuser.password")
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$(cat "$home/port")" -U postgres -d postgres -qtAc \
    "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null
  ;;
stop)
  if [ -f "$home/data/PG_VERSION" ]; then as_pg "$PGBIN/pg_ctl" -D "$home/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  ;;
destroy)
  if [ -f "$home/data/PG_VERSION" ]; then as_pg "$PGBIN/pg_ctl" -D "$home/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$home" "$dir/cluster"
  ;;
*) echo "$usage" >&2; exit 2 ;;
esac
