#!/usr/bin/env bash
# bench/compare.sh — berth and its peers side by side, in one run.
#
# One origin (Debian's docker-registry) holds one random, uncompressed blob.
# In front of it, one at a time, each started empty:
#   berth                 this work tree, coalescing fills, sendfile from disk
#   distribution proxy    docker-registry with proxy.remoteurl (pull-through cache)
#   nginx proxy_cache     cache key = the digest, proxy_cache_lock on
# and, as the machine's ceiling for a warm GET, nginx serving the blob's file
# from the origin's storage directly (sendfile).
# For each: a cold burst (N clients GET the blob at once, every body's sha256
# checked; GETs reaching the origin counted from its access log; wall time;
# median and worst time to the first body byte), then warm throughput (N
# clients x R sequential GETs), and the peak RSS (VmHWM) of the server's
# processes. Prints a Markdown report with each figure also as a ratio to
# berth's, and draws a PNG chart with gnuplot.
#
# Usage: bench/compare.sh [-o REPORT.md] [-p CHART.png]
# Environment:
#   SIZE_MIB=256   blob size          CLIENTS=16  concurrent clients
#   REPEAT=4       warm GETs per client
#   TMPBASE=/var/tmp  where the stores go (disk-backed, not tmpfs)
#   KEEP=1         keep the temp dir (configs, logs)
# Needs go, curl, ss, docker-registry, nginx, gnuplot; as root it installs the
# missing Debian packages (docker-registry nginx gnuplot-nox).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT= PNG=
while [[ $# -gt 0 ]]; do
	case $1 in
	-o) OUT=$2; shift ;;
	-p) PNG=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
SIZE_MIB=${SIZE_MIB:-256}
CLIENTS=${CLIENTS:-16}
REPEAT=${REPEAT:-4}
TMPBASE=${TMPBASE:-/var/tmp}
KEEP=${KEEP:-0}

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

# --- tools
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if [[ ${#need[@]} -gt 0 ]]; then
	[[ $(id -u) == 0 ]] || die "missing ${need[*]}: apt-get install ${need[*]} (as root)"
	log "installing ${need[*]}"
	apt-get update -q >/dev/null
	# A policy-rc.d answering 101 keeps the packaged nginx service from
	# starting on port 80 (one that is there already is left alone).
	ours=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1
	fi
	rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null || rc=$?
	[[ -n $ours ]] && rm -f /usr/sbin/policy-rc.d
	[[ $rc == 0 ]] || die "apt-get install ${need[*]} failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for c in go curl ss; do command -v "$c" >/dev/null || die "$c not found"; done
[[ $(stat -f -c %T "$TMPBASE") != tmpfs ]] || die "TMPBASE=$TMPBASE is tmpfs: stores must be on disk"

TMP=$(mktemp -d "$TMPBASE/berth-compare.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	set +e
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# Peak RSS in bytes of the processes whose PIDs are given: "largest total".
peak_rss() {
	local max=0 sum=0 v
	for p in "$@"; do
		v=$(awk '$1 == "VmHWM:" { print $2 * 1024 }' "/proc/$p/status" 2>/dev/null || echo 0)
		sum=$((sum + v)); ((v > max)) && max=$v
	done
	echo "$max $sum"
}
stop() { # pid
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# --- build
log "building berth and the helpers in $TMP"
(cd "$ROOT" && go build -o "$TMP/berth" ./cmd/berth && go build -o "$TMP/pusher" ./bench/cmd/pusher &&
	go build -o "$TMP/burst" ./bench/cmd/burst)
BUILT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# --- origin
RPORT=$(free_port)
mkdir -p "$TMP/origin"
cat >"$TMP/origin/config.yml" <<EOF
version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: $TMP/origin/data}}
http: {addr: 127.0.0.1:$RPORT}
EOF
docker-registry serve "$TMP/origin/config.yml" >"$TMP/origin.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")
wait_http "http://127.0.0.1:$RPORT/v2/" "$RPID" "origin docker-registry"
log "pushing a random $SIZE_MIB MiB blob to the origin"
DG=$("$TMP/pusher" -registry "http://127.0.0.1:$RPORT" -repo test/big -size $((SIZE_MIB << 20)) -seed 7 -tag bench)
HEX=${DG#sha256:}
BLOBFILE=$TMP/origin/data/docker/registry/v2/blobs/sha256/${HEX:0:2}/$HEX/data
[[ -f $BLOBFILE ]] || die "blob file $BLOBFILE not found in the origin's storage"
origin_gets() { grep -c "\"GET /v2/test/big/blobs/$DG " "$TMP/origin.log" || true; }
BLOBPATH=/v2/test/big/blobs/$DG

# nginx_conf NAME PORT LOCATION-BODY: a minimal, tuned nginx for one location.
nginx_conf() {
	mkdir -p "$TMP/$1"
	cat >"$TMP/$1/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $TMP/$1/nginx.pid;
error_log $TMP/$1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000;
  client_body_temp_path $TMP/$1/body;
  proxy_temp_path $TMP/$1/proxy;
  fastcgi_temp_path $TMP/$1/fastcgi;
  uwsgi_temp_path $TMP/$1/uwsgi;
  scgi_temp_path $TMP/$1/scgi;
  default_type application/octet-stream;
  $3
  server {
    listen 127.0.0.1:$2;
    location = /v2/ { return 200 '{}'; }
    $4
  }
}
EOF
}
start_nginx() { # name -> PID (master)
	"$NGINX" -p "$TMP/$1" -c "$TMP/$1/nginx.conf" -g 'daemon off;' >"$TMP/$1/stderr.log" 2>&1 &
	SPID=$!
	PIDS+=("$SPID")
}
nginx_pids() { echo "$1" $(pgrep -P "$1" || true); }

# --- servers (each sets SPID, SPORT, and SPROCS for the RSS figure)
start_berth() {
	SPORT=$(free_port)
	"$TMP/berth" serve --listen "127.0.0.1:$SPORT" --data-dir "$TMP/berth-data" --admin-socket "$TMP/admin.sock" \
		--upstream "registry.test=http://127.0.0.1:$RPORT" --default-upstream registry.test \
		--log-format text >"$TMP/berth.log" 2>&1 &
	SPID=$!
	PIDS+=("$SPID")
	wait_http "http://127.0.0.1:$SPORT/readyz" "$SPID" berth
}
start_distribution() {
	SPORT=$(free_port)
	mkdir -p "$TMP/dist"
	cat >"$TMP/dist/config.yml" <<EOF
version: 0.1
log: {level: warn, formatter: text}
storage: {filesystem: {rootdirectory: $TMP/dist/data}}
http: {addr: 127.0.0.1:$SPORT}
proxy: {remoteurl: http://127.0.0.1:$RPORT}
EOF
	docker-registry serve "$TMP/dist/config.yml" >"$TMP/dist.log" 2>&1 &
	SPID=$!
	PIDS+=("$SPID")
	wait_http "http://127.0.0.1:$SPORT/v2/" "$SPID" "distribution proxy"
}
start_nginx_cache() {
	SPORT=$(free_port)
	nginx_conf nginx-cache "$SPORT" \
		"proxy_cache_path $TMP/nginx-cache/cache levels=1:2 keys_zone=blobs:10m max_size=10g inactive=1d use_temp_path=off;" \
		"location ~ \"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})\$\" {
      proxy_pass http://127.0.0.1:$RPORT;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_cache blobs;
      proxy_cache_key \$2;
      proxy_cache_valid 200 1d;
      proxy_cache_lock on;
      proxy_cache_lock_age 15m;
      proxy_cache_lock_timeout 15m;
    }"
	start_nginx nginx-cache
	wait_http "http://127.0.0.1:$SPORT/v2/" "$SPID" "nginx proxy_cache"
}
start_nginx_static() {
	SPORT=$(free_port)
	nginx_conf nginx-static "$SPORT" "" \
		"location ~ \"^/v2/.+/blobs/sha256:[0-9a-f]{64}\$\" { alias $BLOBFILE; }"
	start_nginx nginx-static
	wait_http "http://127.0.0.1:$SPORT/v2/" "$SPID" "nginx static"
}

# run_one KEY LABEL START-FUNC COLD(0|1)
declare -A R
run_one() {
	local key=$1 label=$2 before after
	log "$label: starting"
	$3
	local url="http://127.0.0.1:$SPORT$BLOBPATH" procs
	if [[ $4 == 1 ]]; then
		before=$(origin_gets)
		log "$label: cold burst, $CLIENTS clients"
		"$TMP/burst" -url "$url" -n "$CLIENTS" -r 1 -verify >"$TMP/$key.cold" || die "$label: cold burst failed: $(cat "$TMP/$key.cold")"
		after=$(origin_gets)
		R[$key.gets]=$((after - before))
		R[$key.cold_wall]=$(sed -n 's/^WALL_S=//p' "$TMP/$key.cold")
		R[$key.ttfb_med]=$(sed -n 's/^TTFB_MEDIAN_S=//p' "$TMP/$key.cold")
		R[$key.ttfb_max]=$(sed -n 's/^TTFB_MAX_S=//p' "$TMP/$key.cold")
	fi
	log "$label: warm, $CLIENTS clients x $REPEAT GETs"
	"$TMP/burst" -url "$url" -n "$CLIENTS" -r "$REPEAT" >"$TMP/$key.warm" || die "$label: warm run failed: $(cat "$TMP/$key.warm")"
	R[$key.warm]=$(sed -n 's/^MBPS=//p' "$TMP/$key.warm")
	R[$key.warm_wall]=$(sed -n 's/^WALL_S=//p' "$TMP/$key.warm")
	if [[ $key == ncache || $key == nstatic ]]; then procs=$(nginx_pids "$SPID"); else procs=$SPID; fi
	read -r R[$key.rss] R[$key.rss_all] <<<"$(peak_rss $procs)"
	R[$key.procs]=$(wc -w <<<"$procs")
	stop "$SPID"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
run_one berth "berth" start_berth 1
run_one dist "distribution proxy" start_distribution 1
run_one ncache "nginx proxy_cache" start_nginx_cache 1
run_one nstatic "nginx static file" start_nginx_static 0
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# ratio A B: A/B with two significant figures, "—" if either is missing or B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "—"; else printf "%.2f", a / b }'; }
name() { case $1 in berth) echo "berth" ;; dist) echo "distribution proxy" ;; ncache) echo "nginx proxy_cache" ;; nstatic) echo "nginx static file" ;; esac; }
short() { case $1 in berth) echo "berth" ;; dist) echo "distribution" ;; ncache) echo "nginx cache" ;; nstatic) echo "nginx static" ;; esac; }
cell() { local v=${R[$1]:-}; [[ -n $v ]] && echo "$v" || echo "—"; }

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
report() {
	cat <<EOF
Run of \`bench/compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): one ${SIZE_MIB} MiB blob, $CLIENTS clients,
loopback. berth $BUILT; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $(docker-registry --version 2>/dev/null | awk '{ print "distribution " $3 }').
Machine: $(nproc) × $CPU, $MEM, $OS, kernel $(uname -r). Load average before / after: $LOAD_BEFORE / $LOAD_AFTER.

| | upstream GETs (cold) | cold wall s | first byte median s | first byte worst s | warm MB/s | peak RSS MiB |
|---|---|---|---|---|---|---|
EOF
	for k in berth dist ncache nstatic; do
		local rss="—"
		[[ -n ${R[$k.rss]:-} ]] && rss="$(mib "${R[$k.rss]}")"
		[[ ${R[$k.procs]:-1} -gt 1 ]] && rss="$rss per process ($(mib "${R[$k.rss_all]}") in ${R[$k.procs]})"
		echo "| $(name $k) | $(cell $k.gets) | $(cell $k.cold_wall) | $(cell $k.ttfb_med) | $(cell $k.ttfb_max) | $(cell $k.warm) | $rss |"
	done
	cat <<EOF

The same figures as ratios to berth's (above 1: more than berth; for GETs, times and RSS lower is better, for
MB/s higher is better):

| | upstream GETs | cold wall | first byte median | first byte worst | warm MB/s | peak RSS (all processes) |
|---|---|---|---|---|---|---|
EOF
	for k in dist ncache nstatic; do
		echo "| $(name $k) | $(ratio "${R[$k.gets]:-}" "${R[berth.gets]}") | $(ratio "${R[$k.cold_wall]:-}" "${R[berth.cold_wall]}") | $(ratio "${R[$k.ttfb_med]:-}" "${R[berth.ttfb_med]}") | $(ratio "${R[$k.ttfb_max]:-}" "${R[berth.ttfb_max]}") | $(ratio "${R[$k.warm]}" "${R[berth.warm]}") | $(ratio "${R[$k.rss_all]}" "${R[berth.rss_all]}") |"
	done
	echo
	echo "berth's warm throughput is $(awk -v a="${R[berth.warm]}" -v b="${R[nstatic.warm]}" 'BEGIN { printf "%.0f", 100 * a / b }')% of nginx serving the file directly in this run."
}
REPORT=$(report)
echo "$REPORT"
[[ -n $OUT ]] && echo "$REPORT" >"$OUT"

# --- chart: four panels, one bar per server.
if [[ -n $PNG ]]; then
	{
		echo "server gets cold ttfb warm rss"
		for k in berth dist ncache nstatic; do
			printf '"%s" %s %s %s %s %s\n' "$(short $k)" "${R[$k.gets]:-NaN}" "${R[$k.cold_wall]:-NaN}" "${R[$k.ttfb_max]:-NaN}" \
				"${R[$k.warm]}" "$(mib "${R[$k.rss_all]}")"
		done
	} >"$TMP/chart.dat"
	gnuplot <<EOF
set terminal pngcairo size 1200,800 font "sans,11" noenhanced
set output "$PNG"
set multiplot layout 2,2 title "berth vs distribution proxy vs nginx (${SIZE_MIB} MiB blob, $CLIENTS clients, one run, $(date -u +%Y-%m-%d))"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set yrange [0:*]
set xrange [-0.6:3.6]
set xtics scale 0
unset key
set title "cold burst: wall time (s, lower is better)"
plot "$TMP/chart.dat" using 3:xtic(1) skip 1 lc rgb "#4477aa"
set title "cold burst: worst time to first byte (s, lower is better)"
plot "$TMP/chart.dat" using 4:xtic(1) skip 1 lc rgb "#66ccee"
set title "warm: $CLIENTS clients x $REPEAT GETs (MB/s, higher is better)"
plot "$TMP/chart.dat" using 5:xtic(1) skip 1 lc rgb "#228833"
set title "peak RSS, all processes (MiB, lower is better)"
plot "$TMP/chart.dat" using 6:xtic(1) skip 1 lc rgb "#ee6677"
unset multiplot
EOF
	log "chart: $PNG"
fi
