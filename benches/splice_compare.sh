#!/usr/bin/env bash
# TCP forwarding with and without splice(2): examples/tcp_proxy's
# throughput and CPU time per GiB, iperf3 through it, each way.
#
#   bash benches/splice_compare.sh              # about 1 minute
#
# One iperf3 server, two tcp_proxy instances in front of it (one with its
# default splice, one with --no-splice), each with one thread on CPU
# $PROXY_CPU; iperf3 client and server on CPU $LOAD_CPU. Each measurement:
# iperf3 -t DURATION through one proxy, the proxy's CPU time (utime + stime
# from /proc/PID/stat) over it; ROUNDS rounds, the two proxies in turn,
# client to server, then server to client (iperf3 -R).
#
# Knobs (environment): DURATION (s, 5), ROUNDS (2), PROXY_CPU, LOAD_CPU,
# BASE_PORT, KEEP_TMP=1.
set -euo pipefail
# shellcheck source=benches/bench_common.sh
. "$(dirname "$0")/bench_common.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}

ensure_tools taskset:util-linux iperf3:iperf3
build_examples tcp_proxy

free_port
SERVER=$PORT
spawn iperf3-server "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$SERVER"
wait_port "$SERVER" "$LAST_PID" || die "iperf3 server did not start"

declare -A PROXY_PORT PROXY_PID
for mode in splice copy; do
    free_port
    args=(--threads 1 --listen "127.0.0.1:$PORT" --backend "127.0.0.1:$SERVER")
    [ "$mode" = copy ] && args+=(--no-splice)
    spawn "tcp_proxy-$mode" "$PROXY_CPU" "$BIN/tcp_proxy" "${args[@]}"
    wait_port "$PORT" "$LAST_PID" || die "tcp_proxy ($mode) did not start"
    PROXY_PORT[$mode]=$PORT
    PROXY_PID[$mode]=$LAST_PID
done

# CPU time of PID so far, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

echo "=== splice_compare: tcp_proxy on CPU $PROXY_CPU, iperf3 on CPU $LOAD_CPU, $ROUNDS round(s) of ${DURATION}s ==="
printf '%-10s %-7s %12s %14s\n' direction proxy Mbit/s CPU-s/GiB
for dir in up down; do
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in splice copy; do
            pid=${PROXY_PID[$mode]}
            before=$(ticks "$pid")
            out=$(timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
                iperf3 -c 127.0.0.1 -p "${PROXY_PORT[$mode]}" -t "$DURATION" -f m \
                $([ "$dir" = down ] && echo -R) 2>&1 || true)
            after=$(ticks "$pid")
            mbit=$(echo "$out" | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) }
                END { print (v == "" ? "-" : v) }')
            per_gib=$(awk -v t=$((after - before)) -v hz="$HZ" -v m="$mbit" -v d="$DURATION" \
                'BEGIN { if (m == "-" || m == 0) print "-"; else printf "%.2f", (t / hz) / (m * d / 8 / 1024) }')
            printf '%-10s %-7s %12s %14s\n' "$dir" "$mode" "$mbit" "$per_gib"
        done
    done
done
echo "(up: client to server through the proxy; down: iperf3 -R)"
