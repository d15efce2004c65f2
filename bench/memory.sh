#!/usr/bin/env bash
# bench/memory.sh — berth's memory under a container memory limit.
#
# Starts a real docker-registry upstream on loopback holding random
# uncompressed blobs, then for each blob size S and client count N starts a
# FRESH berth (empty data dir: cold) inside its own memory cgroup (v1
# memory.limit_in_bytes, or v2 memory.max where the controller exists), runs N
# concurrent pulls of the blob through it (cold: coalesced fetch from the
# upstream), then the same N pulls again (warm: served from disk by sendfile).
# For each phase it records peak RSS (VmHWM, reset between phases with
# clear_refs), peak working set (cgroup usage minus inactive file, sampled
# every 50 ms: the figure the kubelet evicts on), the cgroup's max usage, OOM
# kills, time and throughput, and whether every body matched its sha256.
# During each phase four tags/list requests run alongside the pulls (a phase
# whose tag lists do not all answer 200 counts as failed), and so does a
# hostile mix (security issue's memory-side defects, so their RSS is in the
# figures): 300 requests with made-up methods (each must get 405, and adds no
# metric series), 32 connections holding ~60 KB of unfinished headers until
# the phase ends, and one admin batch of 2000 status calls (must be refused
# with -32600; needs python3, else skipped with a note).
# Then, once, a state phase (STATE=1) against a fresh berth that also mirrors
# a Basic-auth docker-registry (htpasswd): 3,000 requests to one of its
# private repositories, each with a distinct wrong password, then 10,000
# anonymous requests each for a distinct unknown repository of it (each
# answered 401 upstream: the answer that makes berth remember a private
# repository), then 10,000 for distinct unknown repositories of the open
# upstream (404). It records peak RSS, peak open fds (/proc/PID/fd), peak
# established connections to the private upstream and meta.db growth, against
# the goals RSS <= 64 MiB, fds <= 256, meta.db growth <= 512 KiB.
# It prints Markdown tables and exits non-zero if a body failed verification,
# berth died, or an OOM kill occurred.
#
# Usage: bench/memory.sh [-q|--quick] [-o FILE]
# Environment:
#   QUICK=1          only 64 MiB x {1,16} (a smoke test, ~20 s)
#   SIZES="64 512"   blob sizes in MiB          CLIENTS="1 16 64"  client counts
#   LIMIT_MIB=96     cgroup memory limit        STRACE=1  extra warm pass of the largest
#                                                         N under strace (sendfile proof)
#   METRICS=1        sample go_memstats_* from /metrics during runs (uncompressed)
#   METRICS_INTERVAL=15s  how often, besides one scrape just before, one at half of
#                    the bytes and one just after each phase: each scrape allocates
#                    ~150 KB in berth (~1 MB gzipped), so a fast interval inflates
#                    the heap it means to observe
#   RESTART=1        after warm, restart berth on the same data dir and pull warm
#                    again ("warm*": the sendfile path without the cold burst's heap)
#   GCTRACE=1        run berth with GODEBUG=gctrace=1 (logs under the temp dir)
#   REV=             build berth from this git revision (git archive) instead of the work tree
#   TMPBASE=/var/tmp where the temp dir goes: must be disk-backed, not tmpfs
#   KEEP=1           keep the temp dir (logs, strace output, per-run results)
#   STRICT=1         also exit non-zero if the memory goal is not met
#   STATE=1          run the state phase (0: skip it); SIZES=none runs it alone
#   CREDS=3000 REPOS=10000  its request counts  FLOOD_C=32  its concurrency
#   OUT=FILE         also write the report to FILE
# Needs root (cgroups), go, docker-registry, curl, ss; strace for STRACE=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
while [[ $# -gt 0 ]]; do
	case $1 in
	-q | --quick) QUICK=1 ;;
	-o) OUT=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "memory.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
	SIZES=${SIZES:-64} CLIENTS=${CLIENTS:-"1 16"}
else
	SIZES=${SIZES:-"64 512"} CLIENTS=${CLIENTS:-"1 16 64"}
fi
LIMIT_MIB=${LIMIT_MIB:-96}
STRACE=${STRACE:-1}
METRICS=${METRICS:-1}
METRICS_INTERVAL=${METRICS_INTERVAL:-15s}
RESTART=${RESTART:-1}
GCTRACE=${GCTRACE:-1}
KEEP=${KEEP:-0}
STRICT=${STRICT:-0}
REV=${REV:-}
OUT=${OUT:-}
STATE=${STATE:-1}
CREDS=${CREDS:-3000}
REPOS=${REPOS:-10000}
FLOOD_C=${FLOOD_C:-32}
if [[ $SIZES == none ]]; then SIZES= CLIENTS=1; fi
TMPBASE=${TMPBASE:-/var/tmp}
MAXN=$(tr ' ' '\n' <<<"$CLIENTS" | sort -n | tail -1)

die() { echo "memory.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }
mib() { awk -v b="$1" 'BEGIN { if (b < 0 || b == "") print "n/a"; else printf "%.1f", b / 1048576 }'; }

[[ $(id -u) == 0 ]] || die "needs root (memory cgroups, clear_refs)"
for c in go docker-registry curl ss htpasswd; do command -v "$c" >/dev/null || die "$c not found (see /work/shared/TESTING.md, Install)"; done
if [[ $STRACE == 1 ]] && ! command -v strace >/dev/null; then
	die "strace not found: apt-get install -y strace, or STRACE=0"
fi
[[ $(stat -f -c %T "$TMPBASE") != tmpfs ]] ||
	die "TMPBASE=$TMPBASE is tmpfs: the store's pages would be unreclaimable shmem charged to the cgroup"

TMP=$(mktemp -d "$TMPBASE/berth-bench.XXXXXX")
BPID= RPID= PRPID= SPID= CG=
cleanup() {
	local rc=$?
	set +e
	[[ -n $SPID ]] && kill -INT "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
	if [[ -n $BPID ]] && kill -0 "$BPID" 2>/dev/null; then
		kill -TERM "$BPID"
		for _ in $(seq 50); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$BPID" 2>/dev/null
		wait "$BPID" 2>/dev/null
	fi
	if [[ -n $RPID ]]; then kill -TERM "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null; fi
	if [[ -n $PRPID ]]; then kill -TERM "$PRPID" 2>/dev/null && wait "$PRPID" 2>/dev/null; fi
	[[ -n $CG && -d $CG ]] && cg_remove
	if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- memory cgroup (v2 where /sys/fs/cgroup lists the memory controller, else v1)
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
	CGV=2 CGROOT=/sys/fs/cgroup
elif [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
	CGV=1 CGROOT=/sys/fs/cgroup/memory
else
	die "no memory cgroup controller found"
fi
CGNAME=berth-bench-$$
LIMIT=$((LIMIT_MIB << 20))

cg_create() {
	CG=$CGROOT/$CGNAME
	mkdir "$CG"
	if [[ $CGV == 1 ]]; then
		echo "$LIMIT" >"$CG/memory.limit_in_bytes"
	else
		grep -qw memory "$CGROOT/cgroup.subtree_control" || echo +memory >"$CGROOT/cgroup.subtree_control"
		echo "$LIMIT" >"$CG/memory.max"
		echo 0 >"$CG/memory.swap.max" 2>/dev/null || true
	fi
}
cg_remove() {
	for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
	[[ -d $CG ]] && echo "memory.sh: could not remove $CG" >&2
	CG=
}
cg_oom_kills() {
	local f=$CG/memory.oom_control
	[[ $CGV == 2 ]] && f=$CG/memory.events
	awk '$1 == "oom_kill" { print $2; found = 1 } END { if (!found) print 0 }' "$f"
}
# Times the limit was hit (reclaim, not necessarily an OOM).
cg_failcnt() {
	if [[ $CGV == 1 ]]; then cat "$CG/memory.failcnt"; else awk '$1 == "max" { print $2 }' "$CG/memory.events"; fi
}
cg_max_usage() {
	if [[ $CGV == 1 ]]; then cat "$CG/memory.max_usage_in_bytes"
	elif [[ -f $CG/memory.peak ]]; then cat "$CG/memory.peak"
	else echo -1; fi
}
# v1 resets max_usage_in_bytes; v2's memory.peak resets only per open file,
# so on v2 the warm figure is the peak since berth started.
cg_reset_max() { [[ $CGV == 1 ]] && echo 0 >"$CG/memory.max_usage_in_bytes"; true; }

status_bytes() { awk -v f="$2:" '$1 == f { print $2 * 1024 }' "/proc/$1/status"; }
# Bytes the process caused to be read from storage (page cache misses).
disk_read() { awk '$1 == "read_bytes:" { print $2 }' "/proc/$1/io"; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# --- build
log "building berth and the helpers in $TMP"
if [[ -n $REV ]]; then
	mkdir "$TMP/src"
	git -C "$ROOT" archive "$REV" | tar -x -C "$TMP/src"
	(cd "$TMP/src" && go build -o "$TMP/berth" ./cmd/berth)
	BUILT="$(git -C "$ROOT" rev-parse --short "$REV") (git archive $REV)"
else
	(cd "$ROOT" && go build -o "$TMP/berth" ./cmd/berth)
	BUILT="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) (work tree)"
fi
(cd "$ROOT" && go build -o "$TMP/pullers" ./bench/cmd/pullers && go build -o "$TMP/pusher" ./bench/cmd/pusher &&
	go build -o "$TMP/flood" ./bench/cmd/flood)

# --- upstream
RPORT=$(free_port)
mkdir -p "$TMP/registry"
cat >"$TMP/registry/config.yml" <<EOF
version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: $TMP/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$RPORT}
EOF
docker-registry serve "$TMP/registry/config.yml" >"$TMP/registry.log" 2>&1 &
RPID=$!
wait_http "http://127.0.0.1:$RPORT/v2/" "$RPID" docker-registry
declare -A DIGEST
for s in $SIZES; do
	log "pushing a random ${s} MiB blob to 127.0.0.1:$RPORT/test/big:${s}m"
	DIGEST[$s]=$("$TMP/pusher" -registry "http://127.0.0.1:$RPORT" -repo test/big -size $((s << 20)) -seed "$s" -tag "${s}m")
done
# A second upstream with Basic auth: every repository of it is private.
PPORT=$(free_port)
mkdir -p "$TMP/private"
htpasswd -Bbn alice right-password >"$TMP/private/htpasswd" 2>/dev/null
cat >"$TMP/private/config.yml" <<EOF
version: 0.1
log: {level: warn, formatter: text}
storage: {filesystem: {rootdirectory: $TMP/private/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PPORT}
auth: {htpasswd: {realm: bench, path: $TMP/private/htpasswd}}
EOF
docker-registry serve "$TMP/private/config.yml" >"$TMP/private.log" 2>&1 &
PRPID=$!
for _ in $(seq 300); do
	[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PPORT/v2/") == 401 ]] && break
	kill -0 "$PRPID" 2>/dev/null || die "the private docker-registry exited early (logs in $TMP)"
	sleep 0.05
done
upstream_gets() { grep -c "\"GET /v2/test/big/blobs/$1 " "$TMP/registry.log" || true; }
# upstream_mib DIGEST: MiB the upstream sent for the blob (the combined log's
# byte count): a blob over 16 MiB comes in ranged pieces, many GETs, once.
upstream_mib() { awk -v p="/v2/test/big/blobs/$1" '$7 == p && $6 == "\"GET" { b += $10 } END { printf "%.0f", b / 1048576 }' "$TMP/registry.log"; }

# --- berth
start_berth() { # data-dir log
	local env=()
	[[ $GCTRACE == 1 ]] && env+=(GODEBUG=gctrace=1)
	BPORT=$(free_port)
	env "${env[@]}" bash -c 'echo $$ >"$1/cgroup.procs" && exec "${@:2}"' _ "$CG" "$TMP/berth" serve \
		--listen "127.0.0.1:$BPORT" --data-dir "$1" --admin-socket "$TMP/admin.sock" \
		--upstream "registry.test=http://127.0.0.1:$RPORT" --upstream "priv.test=http://127.0.0.1:$PPORT" \
		--default-upstream registry.test \
		--log-format text >"$2" 2>&1 &
	BPID=$!
	wait_http "http://127.0.0.1:$BPORT/readyz" "$BPID" berth
	grep -qx "$BPID" "$CG/cgroup.procs" || die "berth ($BPID) is not in $CG"
}
stop_berth() {
	kill -TERM "$BPID" 2>/dev/null || true
	for _ in $(seq 350); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$BPID" 2>/dev/null || true
	BRC=0
	wait "$BPID" 2>/dev/null || BRC=$?
	BPID=
}

ROWS=() DETAIL=() STRACE_ROWS=()
FAILED=0 OOMS=0
declare -A RSS # "S N phase" -> peak RSS bytes

# hostile_mix OUT: the requests of the security issue's memory-side defects,
# run alongside a phase until OUT.stop exists. Writes "hostile ok ..." to OUT
# when every answer was the expected refusal.
hostile_mix() {
	local out=$1 bad=0 i fds=() fd pad code
	: >"$out"
	pad=$(head -c 60000 /dev/zero | tr '\0' a)
	for i in $(seq 1 32); do
		exec {fd}<>"/dev/tcp/127.0.0.1/$BPORT" || continue
		printf 'GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Pad: %s' "$pad" >&"$fd" 2>/dev/null || true
		fds+=("$fd")
	done
	for i in $(seq 1 300); do
		code=$(curl -sS -o /dev/null -w '%{http_code}' -X "M$RANDOM$i" "http://127.0.0.1:$BPORT/v2/registry.test/test/big/tags/list" 2>/dev/null)
		[[ $code == 405 ]] || bad=$((bad + 1))
	done
	local batch="skipped (no python3)"
	if command -v python3 >/dev/null; then
		batch=$(python3 - "$TMP/admin.sock" <<'PY' 2>&1
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(2000)]).encode() + b"\n")
buf = b""
while b"\n" not in buf:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
r = json.loads(buf.split(b"\n")[0])
print(r["error"]["code"] if isinstance(r, dict) and "error" in r else "accepted")
PY
)
		[[ $batch == -32600 ]] || bad=$((bad + 1))
	fi
	while [[ ! -e $out.stop ]]; do sleep 0.2; done
	for fd in "${fds[@]}"; do exec {fd}>&-; done
	local series
	series=$(curl -sS "http://127.0.0.1:$BPORT/metrics" | grep -c '^berth_http_requests_total{' || true)
	if [[ $bad == 0 ]]; then
		echo "hostile ok: 300 odd methods -> 405, ${#fds[@]} unfinished-header connections held, admin batch of 2000 -> $batch, request series $series" >>"$out"
	else
		echo "hostile failed: $bad unexpected answers (admin batch: $batch)" >>"$out"
	fi
}

# run_phase S N phase: N concurrent pulls, then the figures of that phase.
run_phase() {
	local s=$1 n=$2 phase=$3 dg=${DIGEST[$1]} out="$TMP/pull-$1-$2-${3//\*/-restarted}.env" verified=yes alive=yes
	local oom0 up0 upb0 rd0 metrics_args=()
	[[ $METRICS == 1 ]] && metrics_args=(-metrics "http://127.0.0.1:$BPORT/metrics" -metrics-interval "$METRICS_INTERVAL")
	echo 5 >"/proc/$BPID/clear_refs"
	cg_reset_max
	oom0=$(cg_oom_kills) up0=$(upstream_gets "$dg") upb0=$(upstream_mib "$dg") rd0=$(disk_read "$BPID")
	local tpid
	{
		for _ in 1 2 3 4; do
			curl -sS -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$BPORT/v2/registry.test/test/big/tags/list" &
		done
		wait
	} >"$out.tags" 2>&1 &
	tpid=$!
	local hpid
	hostile_mix "$out.hostile" &
	hpid=$!
	"$TMP/pullers" -url "http://127.0.0.1:$BPORT/v2/registry.test/test/big/blobs/$dg" -n "$n" \
		-size $((s << 20)) -cgroup "$CG" -pid "$BPID" "${metrics_args[@]}" >"$out" 2>"$out.err" || verified=no
	wait "$tpid" || true
	touch "$out.hostile.stop"
	wait "$hpid" || true
	[[ $(grep -c '^200$' "$out.tags") == 4 ]] || { verified=no; log "  tags/list: $(tr '\n' ' ' <"$out.tags")"; }
	if grep -q '^hostile ok' "$out.hostile"; then log "  $(cat "$out.hostile")"; else verified=no; log "  hostile mix: $(tr '\n' ' ' <"$out.hostile")"; fi
	declare -A R=()
	while IFS='=' read -r k v; do R[$k]=$v; done <"$out"
	local hwm=-1 maxu oom ups rd=-1
	if kill -0 "$BPID" 2>/dev/null; then
		hwm=$(status_bytes "$BPID" VmHWM) rd=$(($(disk_read "$BPID") - rd0))
	else
		alive=no verified=no
	fi
	maxu=$(cg_max_usage) oom=$(($(cg_oom_kills) - oom0)) ups="$(($(upstream_gets "$dg") - up0)) ($(($(upstream_mib "$dg") - upb0)) MiB)"
	[[ ${R[OK]:-0} == "$n" ]] || verified=no
	[[ $verified == yes ]] || FAILED=$((FAILED + 1))
	OOMS=$((OOMS + oom))
	RSS["$s $n $phase"]=$hwm
	ROWS+=("| ${s} MiB | $n | $phase | $(mib "$hwm") | $(mib "${R[PEAK_WS]:--1}") | $oom | ${R[MBPS]:-0} | $verified | $(mib "$maxu") | ${R[ELAPSED_S]:-n/a} | $ups |")
	DETAIL+=("| ${s} MiB | $n | $phase | $(mib "$IDLE_RSS") | $(mib "${R[PEAK_RSS]:--1}") | $(mib "${R[PEAK_RSS_ANON]:--1}") | $(mib "${R[ATPEAK_RSS_FILE]:--1}") | $(mib "${R[MID_RSS]:--1}") | $(mib "${R[MID_HEAP_INUSE]:--1}") | $(mib "${R[MID_STACK_INUSE]:--1}") | $(mib "${R[MID_GO_SYS]:--1}") | ${R[MID_GOROUTINES]:-n/a} | $(mib "${R[PEAK_HEAP_INUSE]:--1}") | $(mib "${R[PEAK_STACK_INUSE]:--1}") | $(mib "${R[ALLOCATED]:--1}") (${R[ALLOC_SCRAPES]:-0}) | ${R[PEAK_THREADS]:-n/a} | $(mib "$rd") | $(cg_failcnt) | ${R[TTFB_MAX_S]:-n/a} |")
	log "$s MiB x $n $phase: peak RSS $(mib "$hwm") MiB, working set $(mib "${R[PEAK_WS]:--1}") MiB, ${R[MBPS]:-0} MB/s, verified $verified, oom $oom, upstream GETs $ups"
	if [[ $verified != yes ]]; then
		log "  first error: ${R[FIRST_ERROR]:-} $(head -c 300 "$out.err")"
		[[ $alive == yes ]] || log "  berth is gone; see $TMP/berth-$s-$n.log"
	fi
}

# strace_phase S N: one more warm pass with every thread of berth traced;
# counts and bytes of the copy syscalls.
strace_phase() {
	local s=$1 n=$2 dg=${DIGEST[$1]} trace="$TMP/strace-$1-$2.txt" verified=yes
	strace -f -qq -e signal=none -e trace=sendfile,read,write,writev,pread64,pwrite64,copy_file_range,splice \
		-o "$trace" -p "$BPID" 2>"$trace.err" &
	SPID=$!
	sleep 1
	"$TMP/pullers" -url "http://127.0.0.1:$BPORT/v2/registry.test/test/big/blobs/$dg" -n "$n" \
		>"$TMP/pull-$s-$n-strace.env" 2>&1 || verified=no
	kill -INT "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || true
	SPID=
	[[ $verified == yes ]] || FAILED=$((FAILED + 1))
	# calls, errors (EAGAIN: socket full, wait for poll) and bytes per syscall
	local counts
	counts=$(awk '
		/unfinished \.\.\.>$/ { next }
		{
			name = ""
			if (match($0, /<\.\.\. [a-z0-9_]+ resumed>/)) { name = substr($0, RSTART + 5, RLENGTH - 14) }
			else if (match($0, /^[0-9]+ +[a-z0-9_]+\(/)) { name = substr($0, RSTART, RLENGTH - 1); sub(/^[0-9]+ +/, "", name) }
			if (name == "" || !match($0, /\) += -?[0-9]+/)) next
			r = substr($0, RSTART, RLENGTH); sub(/\) += /, "", r); r += 0
			calls[name]++; if (r < 0) errs[name]++; else bytes[name] += r
		}
		END { for (k in calls) printf "%s %d %d %.0f\n", k, calls[k], errs[k], bytes[k] }' "$trace")
	local sc=(0 0 0) rd=(0 0 0) wr=(0 0 0) pr=(0 0 0) other=""
	while read -r name c e b; do
		case $name in
		sendfile) sc=("$c" "$e" "$b") ;;
		read) rd=("$c" "$e" "$b") ;;
		write) wr=("$c" "$e" "$b") ;;
		pread64) pr=("$c" "$e" "$b") ;;
		*) other+="$name $c calls $(mib "$b") MiB; " ;;
		esac
	done <<<"$counts"
	STRACE_ROWS+=("| ${s} MiB | $n | $(mib $((s * n << 20))) | ${sc[0]} (${sc[1]} EAGAIN) | $(mib "${sc[2]}") | ${rd[0]} | $(mib "${rd[2]}") | ${wr[0]} | $(mib "${wr[2]}") | ${pr[0]} | ${other:-none} | $verified |")
	log "$s MiB x $n warm under strace: sendfile ${sc[0]} calls $(mib "${sc[2]}") MiB, read ${rd[0]} ($(mib "${rd[2]}") MiB), write ${wr[0]} ($(mib "${wr[2]}") MiB)"
}

START=$(date +%s) LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $SIZES; do
	for n in $CLIENTS; do
		cg_create
		mkdir "$TMP/data-$s-$n"
		start_berth "$TMP/data-$s-$n" "$TMP/berth-$s-$n.log"
		sleep 1
		IDLE_RSS=$(status_bytes "$BPID" VmRSS)
		log "$s MiB x $n: berth $BPID on 127.0.0.1:$BPORT in $CG, idle RSS $(mib "$IDLE_RSS") MiB"
		run_phase "$s" "$n" cold
		run_phase "$s" "$n" warm
		if [[ $RESTART == 1 ]]; then
			stop_berth
			[[ $BRC == 0 ]] || { log "berth exited with status $BRC"; FAILED=$((FAILED + 1)); }
			start_berth "$TMP/data-$s-$n" "$TMP/berth-$s-$n-restarted.log"
			sleep 1
			IDLE_RSS=$(status_bytes "$BPID" VmRSS)
			run_phase "$s" "$n" "warm*"
		fi
		[[ $STRACE == 1 && $n == "$MAXN" && -n $BPID ]] && strace_phase "$s" "$n"
		stop_berth
		[[ $BRC == 0 ]] || { log "berth exited with status $BRC"; FAILED=$((FAILED + 1)); }
		cg_remove
	done
done

# state_flood WHAT URL USER PASSWORD N [UPSTREAM-PORT]: one flood of the state
# phase; its peaks of RSS, fds and connections to the upstream (default: the
# private one), and how much meta.db grew.
STATE_ROWS=()
declare -A STATE_RSS=() STATE_FDS=() STATE_DB=()
state_flood() {
	local what=$1 out="$TMP/state-${1// /-}.env" hwm db0 db1
	echo 5 >"/proc/$BPID/clear_refs"
	db0=$(stat -c %s "$TMP/data-state/meta.db")
	"$TMP/flood" -url "$2" -user "$3" -password "$4" -n "$5" -c "$FLOOD_C" -pid "$BPID" -upstream-port "${6:-$PPORT}" \
		>"$out" 2>"$out.err" || log "  flood: $(head -c 300 "$out.err")"
	declare -A R=()
	while IFS='=' read -r k v; do R[$k]=$v; done <"$out"
	hwm=-1
	kill -0 "$BPID" 2>/dev/null && hwm=$(status_bytes "$BPID" VmHWM)
	db1=$(stat -c %s "$TMP/data-state/meta.db")
	STATE_RSS[$what]=$hwm STATE_FDS[$what]=${R[PEAK_FDS]:-999999} STATE_DB[$what]=$((db1 - db0))
	STATE_ROWS+=("| $what | $5 | ${R[CODES]:-none} | ${R[ELAPSED_S]:-n/a} | $(mib "$hwm") | ${R[PEAK_FDS]:-n/a} | ${R[PEAK_UPSTREAM_CONNS]:-n/a} | $(((db1 - db0) >> 10)) |")
	log "state $what x $5: ${R[CODES]:-none} in ${R[ELAPSED_S]:-?} s, peak RSS $(mib "$hwm") MiB, fds ${R[PEAK_FDS]:-?}, upstream conns ${R[PEAK_UPSTREAM_CONNS]:-?}, meta.db +$(((db1 - db0) >> 10)) KiB"
}
if [[ $STATE == 1 ]]; then
	cg_create
	mkdir "$TMP/data-state"
	start_berth "$TMP/data-state" "$TMP/berth-state.log"
	sleep 1
	STATE_IDLE=$(status_bytes "$BPID" VmRSS)
	log "state phase: berth $BPID, idle RSS $(mib "$STATE_IDLE") MiB, $FLOOD_C requests at a time"
	state_flood "wrong credentials" "http://127.0.0.1:$BPORT/v2/priv.test/secret/app/manifests/latest" alice 'wrong-%d' "$CREDS"
	state_flood "unknown repositories" "http://127.0.0.1:$BPORT/v2/priv.test/unknown/r%d/manifests/latest" "" "" "$REPOS"
	state_flood "unknown public repositories" "http://127.0.0.1:$BPORT/v2/registry.test/unknown/r%d/manifests/latest" "" "" "$REPOS" "$RPORT"
	sleep 1
	STATE_FDS_AFTER=$(find "/proc/$BPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
	STATE_CONNS_AFTER=$(awk -v p="$(printf ':%04X' "$PPORT")" '$3 ~ p"$" && $4 == "01" { n++ } END { print n + 0 }' "/proc/$BPID/net/tcp" "/proc/$BPID/net/tcp6")
	STATE_GOROUTINES=$(curl -s "http://127.0.0.1:$BPORT/metrics" | awk '$1 == "go_goroutines" { print $2 }')
	log "state phase, 1 s after: fds $STATE_FDS_AFTER, upstream connections $STATE_CONNS_AFTER, goroutines $STATE_GOROUTINES"
	OOMS=$((OOMS + $(cg_oom_kills)))
	stop_berth
	[[ $BRC == 0 ]] || { log "berth exited with status $BRC"; FAILED=$((FAILED + 1)); }
	cg_remove
fi
ELAPSED=$(($(date +%s) - START)) LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- goal: peak RSS <= 48 MiB at 512 MiB x 64 (cold and warm); RSS at 512 MiB within 10% of 64 MiB
GOAL=()
goal_ok=yes
for phase in cold warm; do
	v=${RSS["512 64 $phase"]:-}
	if [[ -n $v ]]; then
		ok=$(awk -v b="$v" 'BEGIN { print (b <= 48 * 1048576) ? "yes" : "no" }')
		[[ $ok == yes ]] || goal_ok=no
		GOAL+=("- peak RSS at 512 MiB x 64 clients, $phase: $(mib "$v") MiB (goal <= 48): $ok")
	fi
done
for n in $CLIENTS; do
	for phase in cold warm; do
		a=${RSS["64 $n $phase"]:-} b=${RSS["512 $n $phase"]:-}
		if [[ -n $a && -n $b ]]; then
			ok=$(awk -v a="$a" -v b="$b" 'BEGIN { print (b <= 1.10 * a) ? "yes" : "no" }')
			[[ $ok == yes ]] || goal_ok=no
			GOAL+=("- RSS 512 MiB vs 64 MiB, $n clients, $phase: $(mib "$b") vs $(mib "$a") MiB ($(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.1f%%", (b / a - 1) * 100 }'), goal within +10%): $ok")
		fi
	done
done
for what in "${!STATE_RSS[@]}"; do
	ok=$(awk -v r="${STATE_RSS[$what]}" -v f="${STATE_FDS[$what]}" -v d="${STATE_DB[$what]}" \
		'BEGIN { print (r > 0 && r <= 64 * 1048576 && f <= 256 && d <= 512 * 1024) ? "yes" : "no" }')
	[[ $ok == yes ]] || goal_ok=no
	GOAL+=("- $what: peak RSS $(mib "${STATE_RSS[$what]}") MiB (goal <= 64), fds ${STATE_FDS[$what]} (<= 256), meta.db +$((STATE_DB[$what] >> 10)) KiB (<= 512): $ok")
done
GOAL+=("- OOM kills: $OOMS (goal 0)")
[[ $OOMS == 0 ]] || goal_ok=no

report() {
	echo "berth $BUILT; memory cgroup v$CGV limit $LIMIT_MIB MiB; $(nproc) CPUs; kernel $(uname -r); $ELAPSED s; load average at start $LOAD0, at end $LOAD1"
	[[ $RESTART == 1 ]] && echo "warm* = warm again after restarting berth on the same data dir (no heap left from the cold burst)."
	echo
	echo "| size | clients | phase | peak RSS MiB | peak working set MiB | OOM kills | MB/s aggregate | all bodies verified | cgroup max usage MiB | elapsed s | upstream GETs (MiB) |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${ROWS[@]}"
	echo
	echo "Detail: VmRSS/RssAnon/RssFile sampled every 50 ms; Go runtime from /metrics (uncompressed) once when half of all bytes had arrived ('at 50%') and every $METRICS_INTERVAL ('max'); 'allocated': heap bytes berth allocated during the phase (go_memstats_alloc_bytes_total after minus before), the scrapes' own ~150 KB each included; n/a or 0 with METRICS=0. 'disk read': read_bytes of berth in /proc/PID/io (page cache misses)."
	echo
	echo "| size | clients | phase | idle RSS MiB | peak VmRSS sampled MiB | peak RssAnon MiB | RssFile at peak MiB | at 50%: VmRSS MiB | heap inuse MiB | stacks MiB | Go sys MiB | goroutines | max heap inuse MiB | max stacks MiB | allocated MiB (scrapes) | max threads | disk read MiB | cgroup failcnt | max TTFB s |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${DETAIL[@]}"
	if [[ ${#STRACE_ROWS[@]} -gt 0 ]]; then
		echo
		echo "Warm pass under strace -f (all berth threads), copy syscalls:"
		echo
		echo "| size | clients | body MiB served | sendfile calls | sendfile MiB | read calls | read MiB | write calls | write MiB | pread64 calls | other | verified |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
		printf '%s\n' "${STRACE_ROWS[@]}"
	fi
	if [[ ${#STATE_ROWS[@]} -gt 0 ]]; then
		echo
		echo "State phase: one fresh berth (idle RSS $(mib "$STATE_IDLE") MiB), $FLOOD_C requests at a time (to the Basic-auth upstream priv.test, then the open registry.test), peaks sampled every 50 ms; 1 s after both floods: $STATE_FDS_AFTER fds, $STATE_CONNS_AFTER upstream connections, $STATE_GOROUTINES goroutines."
		echo
		echo "| flood | requests | answers | elapsed s | peak RSS MiB | peak fds | peak upstream conns | meta.db growth KiB |"
		echo "|---|---|---|---|---|---|---|---|"
		printf '%s\n' "${STATE_ROWS[@]}"
	fi
	echo
	echo "Goal met: $goal_ok"
	printf '%s\n' "${GOAL[@]}"
}
report
[[ -z $OUT ]] || report >"$OUT"

rc=0
if [[ $FAILED -gt 0 ]]; then echo "FAIL: $FAILED phase(s) with unverified bodies or a dead berth" >&2; rc=1; fi
if [[ $OOMS -gt 0 ]]; then echo "FAIL: $OOMS OOM kill(s)" >&2; rc=1; fi
if [[ $STRICT == 1 && $goal_ok != yes ]]; then echo "FAIL: memory goal not met" >&2; rc=1; fi
exit $rc
