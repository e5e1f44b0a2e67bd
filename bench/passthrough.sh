#!/usr/bin/env bash
# Pass-through throughput: pgbench -S (simple, extended, prepared) direct to
# Postgres vs through fetchq-proxy, interleaved, medians of REPS runs, plus
# the proxy's CPU per forwarded transaction.
#
#   bench/passthrough.sh            # 3 repetitions of 15 s, 16 clients
#   REPS=5 SECS=30 CLIENTS=32 bench/passthrough.sh
#
# It starts a throw-away Postgres on 127.0.0.1 (TCP, so both paths cross the
# same loopback) and the proxy in front of it, and removes both at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
SECS=${SECS:-15}
CLIENTS=${CLIENTS:-16}
SCALE=${SCALE:-10}
PGPORT=${PGPORT:-55499}
PROXYPORT=${PROXYPORT:-55432}

bindir=${FETCHQ_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
work=$(mktemp -d /tmp/fqbench.XXXXXX)
chmod 755 "$work"
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"

cleanup() {
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true
  run_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

run_pg "$bindir/initdb" -D "$work/data" -A trust -U postgres --no-sync >/dev/null
run_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
  -o "-p $PGPORT -k $work -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null

go build -o "$work/fetchq-proxy" ./cmd/fetchq-proxy
"$work/fetchq-proxy" --listen 127.0.0.1:$PROXYPORT --log-level warn \
  --upstream "host=127.0.0.1 port=$PGPORT user=postgres sslmode=disable" &
proxy_pid=$!
sleep 1

pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p $PGPORT -U postgres postgres >/dev/null 2>&1

cpu_ticks() { awk '{print $14+$15}' /proc/$proxy_pid/stat; }
hz=$(getconf CLK_TCK)
results=$work/results
for rep in $(seq "$REPS"); do
  for mode in simple extended prepared; do
    for target in direct proxy; do
      port=$PGPORT; [ $target = proxy ] && port=$PROXYPORT
      t0=$(cpu_ticks)
      out=$(pgbench -S -n -c "$CLIENTS" -j 2 -T "$SECS" -M $mode -h 127.0.0.1 -p $port -U postgres postgres 2>&1)
      t1=$(cpu_ticks)
      tps=$(echo "$out" | awk '/^tps/ {print $3}')
      n=$(echo "$out" | awk '/actually processed/ {print $NF}')
      failed=$(echo "$out" | awk '/failed transactions/ {print $5}')
      us=""
      [ $target = proxy ] && us=$(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
      echo "$rep $mode $target $tps $failed $us" | tee -a "$results"
    done
  done
done

echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %12s %12s %7s %14s\n' mode direct_tps proxy_tps ratio proxy_us/tx
for mode in simple extended prepared; do
  d=$(awk -v m=$mode '$2==m && $3=="direct" {print $4}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  p=$(awk -v m=$mode '$2==m && $3=="proxy" {print $4}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  u=$(awk -v m=$mode '$2==m && $3=="proxy" {print $6}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-9s %12.0f %12.0f %7.2f %14s\n' $mode "$d" "$p" "$(echo "$p / $d" | bc -l)" "$u"
done
echo "failed transactions (all runs): $(awk '{s+=$5} END {print s+0}' "$results")"
