# shellcheck shell=bash
# Shared helpers of benches/proxy_compare.sh and benches/chaos_compare.sh.
# Sourced, not run. Everything is on loopback; every process started here is
# recorded by PID and stopped by that PID (never by name) when the script
# exits, however it exits.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROXY_CPU=${PROXY_CPU:-1} # the proxy under test
LOAD_CPU=${LOAD_CPU:-0}   # load generators and backends
NCPU=$(nproc 2>/dev/null || echo 1)
if [ "$NCPU" -lt 2 ]; then PROXY_CPU=0 LOAD_CPU=0; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lb-bench.XXXXXX")
chmod 755 "$TMP"
PIDS=()

log() { printf '%s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Stop one recorded process: TERM, up to 3 s, then KILL.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# A process that is not our child (an nginx worker): stop it only while it
# still is the nginx we recorded.
stop_foreign() {
    local pid=$1
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^nginx'; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    local i all=("${PIDS[@]}")
    trap - EXIT INT TERM
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do stop_pid "${all[i]}"; done
    for i in ${NGINX_WORKERS:-}; do stop_foreign "$i"; done
    if [ -n "${KEEP_TMP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME CPU CMD...: start CMD pinned to CPU, output in $TMP/NAME.log;
# its PID is in $LAST_PID.
spawn() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Listening ports are taken below the ephemeral range (where outgoing
# connections would collide with them), or above it when it starts low.
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPH_LO=32768 EPH_HI=60999
if [ "$EPH_LO" -gt 12000 ]; then
    NEXT_PORT=${BASE_PORT:-$((10000 + RANDOM % (EPH_LO - 12000)))}
else
    NEXT_PORT=${BASE_PORT:-$((EPH_HI + 1 + RANDOM % ((65000 - EPH_HI) / 2 + 1)))}
fi
# A loopback port nobody listens on, in $PORT.
# shellcheck disable=SC2034
free_port() {
    while port_open "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT # read by the callers
    NEXT_PORT=$((NEXT_PORT + 1))
}

# wait_port PORT PID [SECONDS]: until PORT accepts; fails if PID died.
wait_port() {
    local port=$1 pid=$2 limit=${3:-15} i
    for ((i = 0; i < limit * 20; i++)); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Peak resident memory (VmHWM) of the given PIDs together, in MiB.
peak_rss_mib() {
    local kb=0 p v
    for p in "$@"; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        kb=$((kb + ${v:-0}))
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# Install what is missing (Debian packages), running apt-get update first.
ensure_tools() {
    local want=() cmd pkg pair
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        case $cmd in
        /*) [ -e "$cmd" ] && continue ;;
        *) command -v "$cmd" >/dev/null 2>&1 && continue ;;
        esac
        want+=("$pkg")
    done
    [ ${#want[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${want[*]} and no apt-get to install them"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing ${want[*]} (apt-get)"
    $sudo apt-get update -qq >"$TMP/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${want[@]}" >>"$TMP/apt.log" 2>&1 || {
        tail -5 "$TMP/apt.log" >&2
        die "apt-get install ${want[*]} failed"
    }
}

# Build the example binaries into $BIN.
build_examples() {
    log "building examples (release): $*"
    local args=() e
    for e in "$@"; do args+=(--example "$e"); done
    (cd "$ROOT" && cargo build --release --quiet "${args[@]}") || die "cargo build failed"
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples
}

# Raise the open-file limit as far as allowed; MAXCONN is what a proxy may
# hold (each proxied connection takes two descriptors).
raise_fd_limit() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    local n
    n=$(ulimit -n)
    [ "$n" = unlimited ] && n=65536
    MAXCONN=$(((n - 200) / 2))
    [ "$MAXCONN" -gt 20000 ] && MAXCONN=20000
    [ "$MAXCONN" -lt 100 ] && MAXCONN=100
    return 0
}

# nginx's lines that keep its files in $TMP (and let it run as root).
nginx_prelude() {
    local dir=$1
    mkdir -p "$dir/tmp"
    chmod 777 "$dir/tmp"
    [ "$(id -u)" -eq 0 ] && echo "user root;"
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $((2 * MAXCONN + 100));
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $MAXCONN; }
EOF
}

nginx_http_paths() {
    local dir=$1
    cat <<EOF
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

# start_proxy KIND NAME PORT CONF-OR-ARGS...: start nginx (CONF), haproxy
# (CONF), lb-http (TOML) or lb-tcp (arguments) on $PROXY_CPU; waits for PORT.
# Sets PROXY_PID and PROXY_PIDS (every process of the proxy, for RSS).
NGINX_WORKERS=
start_proxy() {
    local kind=$1 name=$2 port=$3
    shift 3
    case $kind in
    nginx) spawn "$name" "$PROXY_CPU" nginx -c "$1" ;;
    haproxy) spawn "$name" "$PROXY_CPU" haproxy -db -f "$1" ;;
    lb-http) spawn "$name" "$PROXY_CPU" "$BIN/http_proxy" --threads 1 --config "$1" ;;
    lb-tcp) spawn "$name" "$PROXY_CPU" "$BIN/tcp_proxy" --threads 1 "$@" ;;
    *) die "unknown proxy kind $kind" ;;
    esac
    PROXY_PID=$LAST_PID
    PROXY_PIDS=$PROXY_PID
    if ! wait_port "$port" "$PROXY_PID"; then
        log "$name did not start; its log:"
        tail -20 "$TMP/$name.log" >&2
        stop_pid "$PROXY_PID"
        return 1
    fi
    if [ "$kind" = nginx ]; then
        local w
        w=$(cat "/proc/$PROXY_PID/task/$PROXY_PID/children" 2>/dev/null || true)
        PROXY_PIDS="$PROXY_PID $w"
        NGINX_WORKERS="$NGINX_WORKERS $w"
    fi
}

stop_proxy() {
    local p
    stop_pid "$PROXY_PID"
    for p in $PROXY_PIDS; do [ "$p" = "$PROXY_PID" ] || stop_foreign "$p"; done
    PROXY_PID='' PROXY_PIDS=''
}

# ratio A B: A/B with two decimals, or "-".
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "-"; exit }
        printf "%.2f", a / b }'
}
