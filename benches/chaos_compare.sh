#!/usr/bin/env bash
# Failure behaviour of lb's http_proxy next to nginx and HAProxy configured
# alike, on loopback.
#
#   bash benches/chaos_compare.sh                  # about 8 minutes
#   DURATION=3 BIG_MB=256 bash benches/chaos_compare.sh   # a quick check
#
# All three proxies: three backends (examples/bench_backend.rs, answering
# with an `x-backend` header), round robin, retry on the next backend
# (errors, timeouts, 502/503/504; 3 tries), connect timeout 1 s, response
# timeout 2 s, client header timeout $CLIENT_HEADER s; nginx: max_fails=1
# fail_timeout=$FAIL_TIMEOUT s; HAProxy: `check inter 1s fall 2 rise 2`
# (GET /health); lb: the same keys in its TOML `[health]` section (dropped,
# with a note, if this build refuses them), with lb's defaults for the rest:
# `fastinter` inter/4 (HAProxy's is inter), checks driving the return of a
# passively ejected backend (HAProxy-like; fail_timeout only without
# checks), and `slow_response` = the check timeout (a request still waiting
# for its head after 1 s ejects its backend at once; the checks confirm or
# undo it). Each scenario runs on a freshly
# started proxy, each proxy in turn:
#   (a) kill one backend (it dies at once) under a steady $RATE req/s GET load, then
#       restart it: client errors, and when it served again after restart;
#   (b) one backend hangs (kill -USR1: its listener stays open, it accepts
#       and never answers): the requests that waited the response timeout,
#       and when the last of them was sent;
#   (c) all backends down: the status returned, median and worst latency;
#   (d) $SLOW_CONNS slowloris connections beside $SLOW_RATE req/s: % served,
#       p99 next to a baseline without them, the proxy's peak RSS, and what
#       the slow clients got (408, closed, still open); $D_ROUNDS rounds, the
#       proxies in turn in each (A B C A B C), each round's baseline and
#       slowloris p99 logged, the table giving their medians (a pause of
#       the machine during one window, which moves a p99 by several times
#       on a shared VM, is outvoted), the least % served, the largest RSS
#       and the slow clients' answers summed over the rounds;
#   (e) a $BIG_MB MiB upload and download, $TRANSFERS times each: the
#       median MiB/s and the proxy's peak RSS;
#   (f) the malformed-request corpus (crates/lb-proxy/tests/corpus/*.http),
#       if present: each proxy's answer per file, and whether it still serves.
# Load generator: examples/loadgen.rs (open loop, fixed rate; wrk2 is not
# packaged by Debian). Pinning: the proxy on CPU $PROXY_CPU, load and
# backends on CPU $LOAD_CPU. Peak RSS is VmHWM from /proc/PID/status (all of
# the proxy's processes). Every load is bounded; every process is stopped by
# its PID when the script ends.
#
# Knobs: DURATION (base seconds, 10), RATE (400), SLOW_RATE (300),
# SLOW_CONNS (500), D_ROUNDS (3), C_RATE (50), BIG_MB (1024), TRANSFERS (3: each big
# transfer is timed this many times, the median counts), FAIL_TIMEOUT (5),
# CLIENT_HEADER (5), NGINX_BUFFERING (off: proxy_request_buffering and
# proxy_buffering; "on" is nginx's default, which spools bodies to disk), PROXIES ("nginx haproxy lb"), SCENARIOS ("a b c d e f"),
# CORPUS_DIR, PROXY_CPU, LOAD_CPU, BASE_PORT, KEEP_TMP=1.
set -euo pipefail
# shellcheck source=benches/bench_common.sh
. "$(dirname "$0")/bench_common.sh"

D=${DURATION:-10}
half=$(((D + 1) / 2))
RATE=${RATE:-400}
SLOW_RATE=${SLOW_RATE:-300}
SLOW_CONNS=${SLOW_CONNS:-500}
C_RATE=${C_RATE:-50}
BIG_MB=${BIG_MB:-1024}
TRANSFERS=${TRANSFERS:-3}
FAIL_TIMEOUT=${FAIL_TIMEOUT:-5}
CLIENT_HEADER=${CLIENT_HEADER:-5}
NGINX_BUFFERING=${NGINX_BUFFERING:-off}
RESP_TIMEOUT=2
A_PRE=${A_PRE:-$half}
A_DOWN=${A_DOWN:-$half}
A_POST=${A_POST:-$((FAIL_TIMEOUT + half + 1))}
B_PRE=${B_PRE:-2}
B_HOLD=${B_HOLD:-$((D + 5))}
C_DUR=${C_DUR:-$half}
D_DUR=${D_DUR:-$D}
D_ROUNDS=${D_ROUNDS:-3}
D_SLOW=$((D_DUR + 2))
[ "$D_SLOW" -lt $((CLIENT_HEADER + 4)) ] && D_SLOW=$((CLIENT_HEADER + 4))
PROXIES=${PROXIES:-nginx haproxy lb}
SCENARIOS=${SCENARIOS:-a b c d e f}
CORPUS_DIR=${CORPUS_DIR:-$ROOT/crates/lb-proxy/tests/corpus}

ensure_tools taskset:util-linux nginx:nginx haproxy:haproxy curl:curl
build_examples http_proxy bench_backend loadgen
raise_fd_limit
now_ms() { date +%s%3N; }

# === backends ===

BPORT=() BPID=()
for i in 1 2 3; do
    free_port
    BPORT[i]=$PORT
done

# backend_start I [MODE]: backend bI on its port (http, or blackhole).
backend_start() {
    local i=$1 mode=${2:-http}
    spawn "backend$i-$mode-$RANDOM" "$LOAD_CPU" "$BIN/bench_backend" \
        --listen "127.0.0.1:${BPORT[i]}" --name "b$i" --mode "$mode"
    BPID[i]=$LAST_PID
    wait_port "${BPORT[i]}" "${BPID[i]}" || die "backend b$i ($mode) did not start"
}
# backend_kill I: SIGTERM, which bench_backend does not handle: it dies at
# once, as in a crash.
backend_kill() {
    stop_pid "${BPID[$1]}"
    BPID[$1]=
}
backends_fresh() {
    local i
    for i in 1 2 3; do
        [ -z "${BPID[i]:-}" ] || backend_kill "$i"
        backend_start "$i"
    done
}

# === proxy configurations ===

nginx_chaos_conf() {
    local port=$1 dir="$TMP/nginx-$1" i
    mkdir -p "$dir"
    {
        nginx_prelude "$dir"
        echo "http {"
        nginx_http_paths "$dir"
        echo "    client_header_timeout ${CLIENT_HEADER}s;"
        echo "    client_max_body_size 0;"
        echo "    upstream be {"
        for i in 1 2 3; do
            echo "        server 127.0.0.1:${BPORT[i]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;"
        done
        cat <<EOF
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout ${RESP_TIMEOUT}s;
            proxy_send_timeout ${RESP_TIMEOUT}s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
            # NGINX_BUFFERING=off (default): stream bodies both ways, as the others do
            proxy_request_buffering $NGINX_BUFFERING;
            proxy_buffering $NGINX_BUFFERING;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    CONF=$dir/nginx.conf
}

haproxy_chaos_conf() {
    local port=$1 i
    CONF=$TMP/haproxy-$port.cfg
    {
        cat <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode http
    timeout connect 1s
    timeout server ${RESP_TIMEOUT}s
    timeout client 30s
    timeout http-request ${CLIENT_HEADER}s
    timeout check 1s
    retries 2
    option redispatch 1
    retry-on all-retryable-errors
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    option httpchk GET /health
    default-server inter 1s fall 2 rise 2
EOF
        for i in 1 2 3; do echo "    server b$i 127.0.0.1:${BPORT[i]} check"; done
    } >"$CONF"
}

# lb_chaos_conf PORT [nohealth]
lb_chaos_conf() {
    local port=$1 i
    CONF=$TMP/lb-$port.toml
    {
        cat <<EOF
listen = "127.0.0.1:$port"
scheduler = "rr"
forwarded_headers = false

[timeouts]
connect = "1s"
response = "${RESP_TIMEOUT}s"
client_header = "${CLIENT_HEADER}s"

[retry]
tries = 3
on_error = true
on_status = [502, 503, 504]
EOF
        if [ "${2:-}" != nohealth ]; then
            cat <<EOF

[health]
interval = "1s"
timeout = "1s"
rise = 2
fall = 2
path = "/health"
max_fails = 1
fail_timeout = "${FAIL_TIMEOUT}s"
EOF
        fi
        for i in 1 2 3; do
            printf '\n[[backend]]\nname = "b%s"\naddr = "127.0.0.1:%s"\n' "$i" "${BPORT[i]}"
        done
    } >"$CONF"
}

LB_NOTE=
# chaos_start NAME: start proxy NAME on a new port ($PORT).
chaos_start() {
    free_port
    case $1 in
    nginx) nginx_chaos_conf "$PORT" && start_proxy nginx nginx "$PORT" "$CONF" ;;
    haproxy) haproxy_chaos_conf "$PORT" && start_proxy haproxy haproxy "$PORT" "$CONF" ;;
    lb)
        lb_chaos_conf "$PORT"
        if ! start_proxy lb-http lb "$PORT" "$CONF" 2>/dev/null; then
            grep -qi health "$TMP/lb.log" || die "http_proxy did not start: $(tail -3 "$TMP/lb.log")"
            LB_NOTE="lb: this build refuses the [health] keys ($(tail -1 "$TMP/lb.log")); ran without them"
            lb_chaos_conf "$PORT" nohealth
            start_proxy lb-http lb "$PORT" "$CONF"
        fi
        ;;
    esac
}

# === results ===

RES=$TMP/chaos.res
: >"$RES"
put() { echo "$1|$2|$3" >>"$RES"; }
get() { awk -F'|' -v k="$1" -v p="$2" '$1 == k && $2 == p { v = $3 } END { print (v == "" ? "n/a" : v) }' "$RES"; }

# rate_load NAME SECONDS RATE CSV: the fixed-rate GET load against $PORT.
rate_load() {
    timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" "$BIN/loadgen" rate \
        --url "http://127.0.0.1:$PORT/" --rate "$3" --duration "$2" --timeout 10 \
        --csv "$4" >"$TMP/$1.out" 2>&1 || true
}
# rate_load_bg: the same in the background (LG_PID).
rate_load_bg() {
    spawn "$1" "$LOAD_CPU" "$BIN/loadgen" rate --url "http://127.0.0.1:$PORT/" \
        --rate "$3" --duration "$2" --timeout 10 --csv "$4"
    LG_PID=$LAST_PID
}
# wait_bounded PID SECONDS: wait for a background job, stopping it after SECONDS.
wait_bounded() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$1"
}
summary_field() { sed -n "s/.*SUMMARY.* $2=\([^ ]*\).*/\1/p" "$1" | tail -1; }

# === scenarios ===

scenario_a() {
    local p=$1 csv=$TMP/a-$1.csv t_restart
    rate_load_bg "a-$p" $((A_PRE + A_DOWN + A_POST)) "$RATE" "$csv"
    sleep "$A_PRE"
    backend_kill 3
    sleep "$A_DOWN"
    t_restart=$(now_ms)
    backend_start 3
    wait_bounded "$LG_PID" $((A_POST + 20))
    read -r n err back < <(awk -F, -v tr="$t_restart" '
        NR > 1 { n++; if ($3 !~ /^2/) err++
                 if ($4 == "b3" && $1 >= tr && first == "") first = $1 }
        END { printf "%d %d %s\n", n, err, (first == "" ? "never" : sprintf("%.2f", (first - tr) / 1000)) }' "$csv")
    put a_err "$p" "$err"
    put a_back "$p" "$back"
    log "  (a) $p: $n requests, $err errors, b3 served again ${back}s after restart; $(grep statuses "$TMP/a-$p.log" || true)"
}

scenario_b() {
    local p=$1 csv=$TMP/b-$1.csv t_bh
    rate_load_bg "b-$p" $((B_PRE + B_HOLD)) "$RATE" "$csv"
    sleep "$B_PRE"
    t_bh=$(now_ms)
    kill -USR1 "${BPID[3]}"
    wait_bounded "$LG_PID" $((B_HOLD + 20))
    read -r n err slow last < <(awk -F, -v tb="$t_bh" -v thr=$((RESP_TIMEOUT * 900)) '
        NR > 1 { n++; if ($3 !~ /^2/) err++
                 if ($1 >= tb && ($2 >= thr || $3 == "timeout")) { slow++; last = $1 } }
        END { printf "%d %d %d %s\n", n, err, slow, (last == "" ? "none" : sprintf("%.2f", (last - tb) / 1000)) }' "$csv")
    put b_slow "$p" "$slow"
    put b_last "$p" "$last"
    put b_err "$p" "$err"
    log "  (b) $p: $n requests, $slow waited >= $((RESP_TIMEOUT * 900)) ms, last sent ${last}s after the hang (window ${B_HOLD}s), $err errors"
}

scenario_c() {
    local p=$1 csv=$TMP/c-$1.csv i
    for i in 1 2 3; do backend_kill "$i"; done
    rate_load "c-$p" "$C_DUR" "$C_RATE" "$csv"
    local st med max
    st=$(tail -n +2 "$csv" | cut -d, -f3 | sort | uniq -c | sort -rn | awk '{ printf "%s%sx%s", (NR > 1 ? "," : ""), $2, $1 }')
    med=$(tail -n +2 "$csv" | cut -d, -f2 | sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "n/a") }')
    max=$(tail -n +2 "$csv" | cut -d, -f2 | sort -g | tail -1)
    put c_status "$p" "$st"
    put c_med "$p" "$med"
    put c_max "$p" "$max"
    log "  (c) $p: statuses $st, median ${med} ms, worst ${max} ms"
}

# scenario_d P [ROUND]: one round; its figures are kept under keys with
# the round's suffix and summed up by d_summary.
scenario_d() {
    local p=$1 r=${2:-1} base slow_pid rss
    rate_load "d0-$p-$r" "$D_DUR" "$SLOW_RATE" "$TMP/d0-$p-$r.csv"
    base=$(summary_field "$TMP/d0-$p-$r.out" p99)
    spawn "slow-$p-$r" "$LOAD_CPU" "$BIN/loadgen" slowloris --addr "127.0.0.1:$PORT" \
        --conns "$SLOW_CONNS" --duration "$D_SLOW" --interval 1
    slow_pid=$LAST_PID
    sleep 1
    rate_load "d1-$p-$r" "$D_DUR" "$SLOW_RATE" "$TMP/d1-$p-$r.csv"
    wait_bounded "$slow_pid" $((D_SLOW + 15))
    rss=$(peak_rss_mib $PROXY_PIDS)
    local f=$TMP/d1-$p-$r.out sent ok p99 slow
    sent=$(summary_field "$f" sent)
    ok=$(summary_field "$f" ok)
    p99=$(summary_field "$f" p99)
    slow=$(sed -n 's/^SLOW //p' "$TMP/slow-$p-$r.log")
    put "d_served_$r" "$p" "$(awk -v o="${ok:-0}" -v s="${sent:-0}" 'BEGIN { printf (s ? "%.1f" : "n/a"), 100 * o / s }')"
    put "d_p99_$r" "$p" "${p99:-n/a}"
    put "d_base_$r" "$p" "${base:-n/a}"
    put "d_rss_$r" "$p" "$rss"
    put "d_slow_$r" "$p" "$(echo "$slow" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (NF) printf "%d/%d/%d/%d", v["got408"], v["answered"] - v["got408"], v["closed"], v["open"] }')"
    log "  (d) $p round $r: served $ok of $sent, p99 ${p99} ms (baseline ${base} ms), peak RSS ${rss} MiB; slow clients: $slow"
}

# d_summary P: the rounds of (d) in one row each: the median p99 and
# baseline, the least % served, the largest RSS, the answers summed.
d_summary() {
    local p=$1 key r vals
    for key in p99 base served rss slow; do
        vals=()
        for ((r = 1; r <= D_ROUNDS; r++)); do vals+=("$(get "d_${key}_$r" "$p")"); done
        case $key in
        p99 | base) put "d_$key" "$p" "$(printf '%s\n' "${vals[@]}" | grep -E '^[0-9.]+$' | sort -g |
            awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "n/a") }')" ;;
        served) put d_served "$p" "$(printf '%s\n' "${vals[@]}" | sort -g | head -n 1)" ;;
        rss) put d_rss "$p" "$(printf '%s\n' "${vals[@]}" | sort -g | tail -n 1)" ;;
        slow) put d_slow "$p" "$(printf '%s\n' "${vals[@]}" | awk -F/ 'NF == 4 { for (i = 1; i <= 4; i++) t[i] += $i; n++ }
            END { if (n) printf "%d/%d/%d/%d", t[1], t[2], t[3], t[4]; else print "n/a" }')" ;;
        esac
    done
    log "  (d) $p over $D_ROUNDS rounds: p99 $(get d_p99 "$p") ms (median; each: $(for ((r = 1; r <= D_ROUNDS; r++)); do printf '%s ' "$(get "d_p99_$r" "$p")"; done)), baseline $(get d_base "$p") ms (each: $(for ((r = 1; r <= D_ROUNDS; r++)); do printf '%s ' "$(get "d_base_$r" "$p")"; done))"
}

# big_transfer P up|down: MiB/s (the median of $TRANSFERS transfers, each
# lasting about a second, too short to judge by one) and peak RSS, on a
# fresh proxy.
big_transfer() {
    local p=$1 dir=$2 out code size secs rates=() k
    chaos_start "$p"
    local cmd=(curl -s -o /dev/null --max-time 300 -H 'Expect:')
    if [ "$dir" = up ]; then
        cmd+=(-T "$TMP/big" -w '%{http_code} %{size_upload} %{time_total}' "http://127.0.0.1:$PORT/upload")
    else
        cmd+=(-w '%{http_code} %{size_download} %{time_total}' "http://127.0.0.1:$PORT/size/$((BIG_MB * 1048576))")
    fi
    for ((k = 0; k < TRANSFERS; k++)); do
        out=$(timeout -k 5 320 taskset -c "$LOAD_CPU" "${cmd[@]}" 2>&1 || true)
        read -r code size secs <<<"$out"
        if [ "${code:-}" = 200 ] && [ "${size:-0}" = $((BIG_MB * 1048576)) ]; then
            rates+=("$(awk -v s="$size" -v t="$secs" 'BEGIN { printf "%.0f", s / 1048576 / t }')")
        else
            rates=("fail:${code:-none}")
            break
        fi
    done
    if [[ "${rates[0]}" == fail:* ]]; then
        put "e_${dir}" "$p" "${rates[0]}"
    else
        put "e_${dir}" "$p" "$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    fi
    put "e_${dir}_rss" "$p" "$(peak_rss_mib $PROXY_PIDS)"
    stop_proxy
    log "  (e) $p $dir: ${rates[*]} MiB/s -> median $(get "e_$dir" "$p"), peak RSS $(get "e_${dir}_rss" "$p") MiB"
}

scenario_e() {
    if [ ! -e "$TMP/big" ]; then
        truncate -s "${BIG_MB}M" "$TMP/big"
        # Read once: the first read of a sparse file fills the page cache,
        # which would slow whichever proxy's first upload comes first.
        cat "$TMP/big" >/dev/null
    fi
    big_transfer "$1" up
    big_transfer "$1" down
}

CORPUS=()
scenario_f() {
    local p=$1 alive
    taskset -c "$LOAD_CPU" "$BIN/loadgen" raw --addr "127.0.0.1:$PORT" --timeout 2 "${CORPUS[@]}" \
        >"$TMP/f-$p.out" 2>&1 || true
    alive=no
    if kill -0 "$PROXY_PID" 2>/dev/null &&
        [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PORT/")" = 200 ]; then
        alive=yes
    fi
    put f_alive "$p" "$alive"
    log "  (f) $p: $(wc -l <"$TMP/f-$p.out") answers, still serving: $alive"
}

# === run ===

log "chaos_compare: proxies [$PROXIES], scenarios [$SCENARIOS]; proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU; temp dir $TMP"
for s in $SCENARIOS; do
    if [ "$s" = f ]; then
        if [ -d "$CORPUS_DIR" ]; then mapfile -t CORPUS < <(find "$CORPUS_DIR" -maxdepth 1 -name '*.http' | sort); fi
        if [ ${#CORPUS[@]} -eq 0 ]; then
            log "(f) skipped: no *.http files in $CORPUS_DIR"
            continue
        fi
    fi
    log "scenario ($s)"
    if [ "$s" = d ]; then
        for ((r = 1; r <= D_ROUNDS; r++)); do
            for p in $PROXIES; do
                backends_fresh
                chaos_start "$p"
                scenario_d "$p" "$r"
                stop_proxy
            done
        done
        for p in $PROXIES; do d_summary "$p"; done
        continue
    fi
    for p in $PROXIES; do
        backends_fresh
        if [ "$s" = e ]; then
            scenario_e "$p"
            continue
        fi
        chaos_start "$p"
        "scenario_$s" "$p"
        stop_proxy
    done
done
for i in 1 2 3; do [ -z "${BPID[i]:-}" ] || backend_kill "$i"; done

# === the table ===

row() {
    local key=$1 label=$2 ratio=${3:-yes} p vals=() v
    printf '%-44s' "$label"
    for p in nginx haproxy lb; do
        v=$(get "$key" "$p")
        vals+=("$v")
        printf ' %12s' "$v"
    done
    if [ "$ratio" = yes ]; then
        printf ' %10s %10s' "$(ratio "${vals[2]}" "${vals[0]}")" "$(ratio "${vals[2]}" "${vals[1]}")"
    fi
    printf '\n'
}

echo
echo "=== chaos_compare (rate $RATE req/s; response timeout ${RESP_TIMEOUT}s; fail_timeout ${FAIL_TIMEOUT}s; client header timeout ${CLIENT_HEADER}s; nginx buffering $NGINX_BUFFERING) ==="
printf '%-44s %12s %12s %12s %10s %10s\n' "scenario / measure" nginx HAProxy lb lb/nginx lb/HAProxy
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }
if has a; then
    row a_err "(a) kill 1 of 3: client errors"
    row a_back "(a) back in rotation after restart (s)"
fi
if has b; then
    row b_slow "(b) blackhole: requests waiting the timeout"
    row b_last "(b) last such request, s after hang (of $B_HOLD)"
    row b_err "(b) blackhole: client errors"
fi
if has c; then
    row c_status "(c) all down: status x count" no
    row c_med "(c) all down: median latency (ms)"
    row c_max "(c) all down: worst latency (ms)"
fi
if has d; then
    row d_served "(d) slowloris: % of normal traffic served"
    row d_p99 "(d) slowloris: p99 (ms, median of $D_ROUNDS)"
    row d_base "(d) baseline p99, no slowloris (ms, median)"
    row d_rss "(d) slowloris: proxy peak RSS (MiB)"
    row d_slow "(d) slow: 408/other/closed/open, all rounds" no
fi
if has e; then
    row e_up "(e) $BIG_MB MiB upload (MiB/s, median of $TRANSFERS)"
    row e_up_rss "(e) upload: proxy peak RSS (MiB)"
    row e_down "(e) $BIG_MB MiB download (MiB/s, median of $TRANSFERS)"
    row e_down_rss "(e) download: proxy peak RSS (MiB)"
fi
if has f && [ ${#CORPUS[@]} -gt 0 ]; then
    row f_alive "(f) corpus: still serving afterwards" no
    echo
    echo "(f) malformed corpus, answer per file (status codes; close = closed without answer):"
    printf '  %-40s %14s %14s %14s\n' file nginx HAProxy lb
    same_n=0 same_h=0
    for f in "${CORPUS[@]}"; do
        b=$(basename "$f")
        a=()
        for p in nginx haproxy lb; do
            a+=("$(awk -v f="$b" '$1 == "RAW" && $2 == f { print $3 }' "$TMP/f-$p.out" 2>/dev/null | head -1)")
        done
        [ "${a[2]}" = "${a[0]}" ] && same_n=$((same_n + 1))
        [ "${a[2]}" = "${a[1]}" ] && same_h=$((same_h + 1))
        printf '  %-40s %14s %14s %14s\n' "$b" "${a[0]:-n/a}" "${a[1]:-n/a}" "${a[2]:-n/a}"
    done
    echo "  lb answered like nginx on $same_n of ${#CORPUS[@]} files, like HAProxy on $same_h"
fi
echo
echo "Ratios are lb's value over the other's (\"-\" where one is zero or not a number)."
[ -z "$LB_NOTE" ] || echo "Note: $LB_NOTE"
