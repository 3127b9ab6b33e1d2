#!/usr/bin/env bash
# Throughput and latency of lb's proxies next to nginx and HAProxy, on one
# machine, over loopback.
#
#   bash benches/proxy_compare.sh                 # about 5 minutes
#   DURATION=3 ROUNDS=1 bash benches/proxy_compare.sh   # a quick check
#
# HTTP: three backends (examples/bench_backend.rs, a small fixed body), then
# nginx (worker_processes 1, upstream keepalive), HAProxy (mode http,
# balance roundrobin, http-reuse always, nbthread 1) and examples/http_proxy
# (--threads 1, scheduler rr) in front of them, each in turn (A B C A B C),
# with `wrk --latency` as the client: requests/s, p50 and p99, and the
# proxy's CPU time (user + system) per request over the measured window.
# TCP: HAProxy (mode tcp, option splice-auto), nginx (stream, if its
# module installs) and examples/tcp_proxy (--threads 1; splice(2) for bulk
# transfers, its default): throughput with iperf3 through the proxy,
# and the connection rate (wrk with `Connection: close` to the HTTP
# backends through the TCP proxy: one connection a request).
#
# Pinning (2 cores): the proxy on CPU $PROXY_CPU (1), wrk, iperf3 and the
# backends on CPU $LOAD_CPU (0). Missing tools (nginx, haproxy, wrk, iperf3,
# the nginx stream module) are installed with apt-get.
#
# Knobs (environment): DURATION (s per measurement, 10), WARMUP (s, 1),
# ROUNDS (2), CONNS (wrk connections, 50), TCP=0 (skip TCP), HTTP=0 (skip
# HTTP), PROXY_CPU, LOAD_CPU, BASE_PORT, KEEP_TMP=1 (keep configs and logs).
set -euo pipefail
# shellcheck source=benches/bench_common.sh
. "$(dirname "$0")/bench_common.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-50}
HTTP=${HTTP:-1}
TCP=${TCP:-1}
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so

ensure_tools taskset:util-linux nginx:nginx haproxy:haproxy wrk:wrk iperf3:iperf3
[ "$TCP" = 0 ] || ensure_tools "$STREAM_MOD:libnginx-mod-stream" || true
build_examples http_proxy tcp_proxy bench_backend
raise_fd_limit

# === backends ===

BACKENDS=()
for i in 1 2 3; do
    free_port
    spawn "backend$i" "$LOAD_CPU" "$BIN/bench_backend" --listen "127.0.0.1:$PORT" --name "b$i"
    wait_port "$PORT" "$LAST_PID" || die "backend b$i did not start"
    BACKENDS+=("127.0.0.1:$PORT")
done

# === configurations ===

# nginx_conf MODE PORT BACKEND...: an nginx.conf (http or stream) in $TMP.
nginx_conf() {
    local mode=$1 port=$2 dir="$TMP/nginx-$1-$2" b
    shift 2
    mkdir -p "$dir"
    {
        [ "$mode" = stream ] && echo "load_module $STREAM_MOD;"
        nginx_prelude "$dir"
        if [ "$mode" = http ]; then
            echo "http {"
            nginx_http_paths "$dir"
            echo "    upstream be {"
            for b in "$@"; do echo "        server $b;"; done
            cat <<EOF
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
        else
            echo "stream {"
            echo "    upstream be {"
            for b in "$@"; do echo "        server $b;"; done
            cat <<EOF
    }
    server {
        listen 127.0.0.1:$port;
        proxy_pass be;
    }
}
EOF
        fi
    } >"$dir/nginx.conf"
    CONF=$dir/nginx.conf
}

# haproxy_conf MODE PORT BACKEND...
haproxy_conf() {
    local mode=$1 port=$2 i=0 b
    shift 2
    CONF=$TMP/haproxy-$mode-$port.cfg
    {
        cat <<EOF
global
    nbthread 1
EOF
        # Splicing takes a pipe (two descriptors) a spliced connection:
        # HAProxy reserves descriptors for maxpipes beside maxconn.
        if [ "$mode" = tcp ]; then
            printf '    maxconn %s\n    maxpipes 128\n' "$((MAXCONN - 300))"
        else
            printf '    maxconn %s\n' "$MAXCONN"
        fi
        cat <<EOF
defaults
    mode $mode
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    balance roundrobin
EOF
        [ "$mode" = http ] && echo "    http-reuse always"
        # As lb's tcp_proxy (splice on by default on Linux): bulk moved by
        # splice(2) when HAProxy sees it pays.
        [ "$mode" = tcp ] && echo "    option splice-auto"
        for b in "$@"; do
            i=$((i + 1))
            echo "    server s$i $b"
        done
    } >"$CONF"
}

# lb_http_conf PORT BACKEND...: a TOML file for examples/http_proxy.
lb_http_conf() {
    local port=$1 i=0 b
    shift
    CONF=$TMP/lb-http-$port.toml
    {
        printf 'listen = "127.0.0.1:%s"\nscheduler = "rr"\nforwarded_headers = false\n' "$port"
        for b in "$@"; do
            i=$((i + 1))
            printf '[[backend]]\nname = "b%s"\naddr = "%s"\n' "$i" "$b"
        done
    } >"$CONF"
}

# start_named NAME MODE PORT BACKEND...: start proxy NAME (nginx, haproxy,
# lb) in MODE (http, tcp) on PORT.
start_named() {
    local name=$1 mode=$2 port=$3
    shift 3
    case $name/$mode in
    nginx/http) nginx_conf http "$port" "$@" && start_proxy nginx nginx "$port" "$CONF" ;;
    nginx/tcp) nginx_conf stream "$port" "$@" && start_proxy nginx nginx "$port" "$CONF" ;;
    haproxy/*) haproxy_conf "$mode" "$port" "$@" && start_proxy haproxy haproxy "$port" "$CONF" ;;
    lb/http) lb_http_conf "$port" "$@" && start_proxy lb-http lb "$port" "$CONF" ;;
    lb/tcp)
        local args=(--listen "127.0.0.1:$port" --sched rr) b
        for b in "$@"; do args+=(--backend "$b"); done
        start_proxy lb-tcp lb "$port" "${args[@]}"
        ;;
    esac
}

# === measuring ===

# proxy_ticks: CPU time (user + system, clock ticks) of the running proxy's
# processes so far.
proxy_ticks() {
    local p t=0
    for p in ${PROXY_PIDS:-}; do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)

# wrk_run URL [wrk options]: "rps p50_ms p99_ms errors cpu_us" of one
# measurement, cpu_us the proxy's CPU time (user + system) per request in
# microseconds: what a request costs it, whatever else the machine does.
wrk_run() {
    local url=$1 out=$TMP/wrk.out before after
    shift
    if [ "$WARMUP" != 0 ]; then
        timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
            wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
    fi
    before=$(proxy_ticks)
    timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$out" 2>&1 || true
    after=$(proxy_ticks)
    awk -v ticks=$((after - before)) -v hz="$HZ" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            return v * 60000
        }
        /requests in/ { reqs = $1 }
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx/ { err += $NF }
        END {
            if (rps == "") { print "- - - - -"; exit }
            printf "%.0f %.3f %.3f %d %.2f\n", rps, p50, p99, err, (reqs ? ticks / hz * 1e6 / reqs : 0)
        }' "$out"
}

# iperf_run PORT: Mbit/s received through PORT.
iperf_run() {
    local out=$TMP/iperf.out
    timeout -k 5 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
        iperf3 -c 127.0.0.1 -p "$1" -t "$DURATION" -f m >"$out" 2>&1 || true
    awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) }
        END { print (v == "" ? "-" : v) }' "$out"
}

RESULTS=$TMP/results
: >"$RESULTS"

# measure TEST MODE KIND PROXIES...: every proxy in turn, ROUNDS times.
measure() {
    local test=$1 mode=$2 kind=$3 round name r
    shift 3
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in "$@"; do
            free_port
            if [ "$kind" = iperf ]; then
                start_named "$name" "$mode" "$PORT" "$IPERF_BACKEND" || continue
                r=$(iperf_run "$PORT")
            else
                start_named "$name" "$mode" "$PORT" "${BACKENDS[@]}" || continue
                if [ "$kind" = connrate ]; then
                    r=$(wrk_run "http://127.0.0.1:$PORT/" -H "Connection: close")
                else
                    r=$(wrk_run "http://127.0.0.1:$PORT/")
                fi
            fi
            stop_proxy
            printf '%-8s round %d  %-8s %s\n' "$test" "$round" "$name" "$r" >&2
            echo "$test $name $round $r" >>"$RESULTS"
        done
    done
}

# report TEST UNIT COLUMNS...: the mean of the rounds per proxy, then lb's ratios.
report() {
    local test=$1
    awk -v test="$test" -v ncol="$(($# - 1))" -v hdr="${*:2}" '
        $1 == test && $4 != "-" {
            n[$2]++
            for (i = 4; i <= NF; i++) sum[$2, i] += $i
        }
        END {
            split("nginx haproxy lb", all, " ")
            for (j = 1; j <= 3; j++) if (all[j] in n) order[++k] = all[j]
            split(hdr, h, " ")
            printf "  %-10s", "proxy"
            for (c = 1; c <= ncol; c++) printf " %12s", h[c]
            printf "\n"
            for (j = 1; j <= k; j++) {
                p = order[j]
                printf "  %-10s", p
                for (c = 1; c <= ncol; c++) {
                    mean[p, c] = sum[p, c + 3] / n[p]
                    printf " %12.2f", mean[p, c]
                }
                printf "\n"
            }
            for (j = 1; j <= k; j++) {
                p = order[j]
                if (p == "lb" || !(("lb", 1) in mean)) continue
                printf "  %-10s", "lb/" p
                for (c = 1; c <= ncol; c++) {
                    if (mean[p, c] == 0) printf " %12s", "-"
                    else printf " %11.2fx", mean["lb", c] / mean[p, c]
                }
                printf "\n"
            }
        }' "$RESULTS"
}

log "proxy on CPU $PROXY_CPU; wrk, iperf3 and backends on CPU $LOAD_CPU; $ROUNDS round(s) of ${DURATION}s; temp dir $TMP"

if [ "$HTTP" != 0 ]; then
    read -r d_rps d_p50 d_p99 _ < <(wrk_run "http://${BACKENDS[0]}/")
    direct="$d_rps req/s, p50 $d_p50 ms, p99 $d_p99 ms"
    log "direct to one backend: $direct"
    measure http http wrk nginx haproxy lb
fi

TCP_PROXIES=(haproxy lb)
if [ "$TCP" != 0 ]; then
    if [ -e "$STREAM_MOD" ]; then TCP_PROXIES=(nginx haproxy lb); else
        log "nginx stream module missing: TCP compares HAProxy and lb only"
    fi
    free_port
    spawn iperf3-server "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$PORT"
    wait_port "$PORT" "$LAST_PID" || die "iperf3 server did not start"
    IPERF_BACKEND=127.0.0.1:$PORT
    measure iperf tcp iperf "${TCP_PROXIES[@]}"
    measure connrate tcp connrate "${TCP_PROXIES[@]}"
fi

echo
echo "=== proxy_compare: proxy on CPU $PROXY_CPU, clients and backends on CPU $LOAD_CPU, mean of $ROUNDS round(s) of ${DURATION}s ==="
if [ "$HTTP" != 0 ]; then
    echo
    echo "HTTP, wrk -t1 -c$CONNS, GET of a 3-byte body, 3 backends (direct to one backend: $direct)"
    report http "req/s" "p50_ms" "p99_ms" "errors" "cpu_us/req"
fi
if [ "$TCP" != 0 ]; then
    echo
    echo "TCP throughput, iperf3 -t $DURATION through the proxy (Mbit/s)"
    report iperf "Mbit/s"
    echo
    echo "TCP connection rate, wrk -t1 -c$CONNS with Connection: close through the proxy"
    report connrate "conn/s" "p50_ms" "p99_ms" "errors" "cpu_us/conn"
fi
echo
echo "(ratios: lb's value over the other's; above 1 is better for req/s, conn/s, Mbit/s; below 1 is better for latency and CPU time)"
echo "(cpu_us: the proxy's CPU time, user + system, per request or connection, over the measured window)"
