#!/usr/bin/env bash
# Instructions per HTTP request of examples/http_proxy, counted by
# callgrind: machine noise does not move them much, so two builds can be
# compared on a busy machine where req/s cannot.
#
#   bash benches/callgrind_http.sh                  # this tree's http_proxy
#   PROXY_BIN=/path/to/other/http_proxy bash benches/callgrind_http.sh
#   PEER=haproxy bash benches/callgrind_http.sh     # HAProxy (nbthread 1,
#                   roundrobin, http-reuse always), as in proxy_compare.sh
#
# Three backends (examples/bench_backend, a 3-byte body), the proxy under
# valgrind --tool=callgrind with --threads 1 (scheduler rr, no forwarded
# headers: as in proxy_compare.sh), wrk -t1 -c50 for WARMUP seconds, the
# counters zeroed, wrk again for DURATION seconds, the counters dumped:
# instructions of the measured window over the requests wrk completed in it.
# Not pinned to CPUs: the count is of instructions, not time.
#
# Knobs (environment): DURATION (s, 20), WARMUP (s, 2), CONNS (50),
# PROXY_BIN, PEER (haproxy: measure HAProxy instead), BASE_PORT, KEEP_TMP=1
# (keep the callgrind files). Only user-space instructions count: the
# kernel's share (socket reads and writes) is not in these figures.
set -euo pipefail
# shellcheck source=benches/bench_common.sh
. "$(dirname "$0")/bench_common.sh"

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-50}

ensure_tools valgrind:valgrind callgrind_control:valgrind wrk:wrk
PEER=${PEER:-}
[ -z "$PEER" ] || [ "$PEER" = haproxy ] || die "PEER: only haproxy is known"
[ -z "$PEER" ] || ensure_tools haproxy:haproxy
build_examples http_proxy bench_backend
PROXY_BIN=${PROXY_BIN:-$BIN/http_proxy}

CONF=$TMP/lb-http.toml
free_port
LISTEN=$PORT
printf 'listen = "127.0.0.1:%s"\nscheduler = "rr"\nforwarded_headers = false\n' "$LISTEN" >"$CONF"
HCONF=$TMP/haproxy.cfg
printf 'global\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nfrontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    balance roundrobin\n    http-reuse always\n' "$LISTEN" >"$HCONF"
for i in 1 2 3; do
    free_port
    spawn "backend$i" "$LOAD_CPU" "$BIN/bench_backend" --listen "127.0.0.1:$PORT" --name "b$i"
    wait_port "$PORT" "$LAST_PID" || die "backend b$i did not start"
    printf '[[backend]]\nname = "b%s"\naddr = "127.0.0.1:%s"\n' "$i" "$PORT" >>"$CONF"
    printf '    server s%s 127.0.0.1:%s\n' "$i" "$PORT" >>"$HCONF"
done

if [ "$PEER" = haproxy ]; then
    PROXY_BIN=$(command -v haproxy)
    PROXY_ARGS=(-f "$HCONF" -db)
else
    PROXY_ARGS=(--threads 1 --config "$CONF")
fi
valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.%p" \
    "$PROXY_BIN" "${PROXY_ARGS[@]}" >"$TMP/proxy.log" 2>&1 &
VG=$!
PIDS+=("$VG")
wait_port "$LISTEN" "$VG" 60 || die "the proxy did not start under valgrind"

URL=http://127.0.0.1:$LISTEN/
timeout -k 5 $((WARMUP + 60)) wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$URL" >/dev/null 2>&1 || true
callgrind_control -z "$VG" >/dev/null
timeout -k 5 $((DURATION + 60)) wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" >"$TMP/wrk.out" 2>&1 || true
callgrind_control -d "$VG" >/dev/null
sleep 1

REQS=$(awk '/requests in/ { print $1 }' "$TMP/wrk.out")
DUMP=$(ls "$TMP"/callgrind.out."$VG".* 2>/dev/null | head -1)
[ -n "$REQS" ] && [ -n "$DUMP" ] || die "no measurement (wrk output or callgrind dump missing)"
IR=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
ERRS=$(grep -E 'Non-2xx|Socket errors' "$TMP/wrk.out" || true)
echo "proxy: $PROXY_BIN"
echo "requests: $REQS in ${DURATION}s under callgrind; instructions: $IR"
awk -v ir="$IR" -v r="$REQS" 'BEGIN { printf "instructions per request: %.0f\n", ir / r }'
[ -z "$ERRS" ] || echo "wrk: $ERRS"
