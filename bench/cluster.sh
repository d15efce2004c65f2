#!/usr/bin/env bash
# bench/cluster.sh — what a berth cluster saves when many nodes pull at once
# (issue 10). For N in NODES (3 and 5) it runs bench/cmd/clusterbench: N
# berth nodes on 127.0.0.1…N, a real docker-registry upstream behind a
# rate-limited proxy standing for one shared WAN link (LINK bytes/s for the
# whole cluster), an image shaped like Spegel's benchmark (10 MB, 4 × 25 MB,
# 256 MB, times SCALE) and a second one with new layers; a create phase
# (every node pulls v1 at once) and an update phase (v2, 20% of the nodes at
# a time, at least one); in three modes: direct (no mirror), single (berth on
# every node, no cluster) and cluster. Pullers fetch as containerd does and
# verify every blob. It prints Markdown tables, and draws a chart with gnuplot.
#
# With HOT=1 it runs the hot-blob scenario instead (issue 18): HOT_NODES nodes
# pull one cold HOT_BLOB MiB blob at the same moment, through one shared
# HOT_LINK bytes/s upstream link, each node's peer uploads capped at
# HOT_UPLOAD bytes/s (cluster.upload_rate, standing for its NIC), in three
# modes: direct (no mirror), whole (a cluster with whole-blob owners,
# piece_fetches: 0) and pieces; it reports the time to the last node against
# one node alone, the most one node sent its peers and the upstream bytes,
# and charts the time to the last node (-p).
#
# Usage: bench/cluster.sh [-o REPORT.md] [-p CHART.png]
# Environment:
#   NODES="3 5"   cluster sizes        LINK=50e6   shared link, bytes/s
#   SCALE=1       layer size multiplier (0.25: a ~1 min run on a busy machine)
#   KEEP=1        keep the temp dir (logs of every node)
#   HOT=1         the hot-blob scenario: HOT_NODES=8 HOT_BLOB=256 (MiB)
#                 HOT_LINK=64e6 (bytes/s) HOT_UPLOAD=64e6 (bytes/s per node)
# Needs go, docker-registry; gnuplot for the chart. Not a timed test: the
# numbers depend on the machine; the ratios are what it measures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="" CHART=""
while [[ $# -gt 0 ]]; do
	case $1 in
	-o) OUT=$2; shift ;;
	-p) CHART=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
NODES=${NODES:-"3 5"}
LINK=${LINK:-50e6}
SCALE=${SCALE:-1}
KEEP=${KEEP:-0}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-cluster-bench.XXXXXX")
cleanup() { if [[ $KEEP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

command -v docker-registry >/dev/null || { echo "cluster.sh: docker-registry not found" >&2; exit 1; }
(cd "$ROOT" && go build -o "$TMP/berth" ./cmd/berth && go build -o "$TMP/clusterbench" ./bench/cmd/clusterbench)

REPORT=$TMP/report.md
if [[ ${HOT:-0} == 1 ]]; then
	HOT_NODES=${HOT_NODES:-8} HOT_BLOB=${HOT_BLOB:-256} HOT_LINK=${HOT_LINK:-64e6} HOT_UPLOAD=${HOT_UPLOAD:-64e6}
	echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$REPORT"
	"$TMP/clusterbench" -scenario hot -berth "$TMP/berth" -registry "$(command -v docker-registry)" \
		-nodes "$HOT_NODES" -blob "$HOT_BLOB" -link "$HOT_LINK" -upload "$HOT_UPLOAD" -out "$TMP/hot" | tee -a "$REPORT"
	if [[ -n $CHART ]] && command -v gnuplot >/dev/null; then
		gnuplot <<-GP
			set terminal pngcairo size 900,420 font ",10"
			set output '$CHART'
			set multiplot layout 1,2 title "hot blob: $HOT_NODES nodes pull one cold ${HOT_BLOB} MiB blob at once (link $HOT_LINK B/s, upload cap $HOT_UPLOAD B/s per node)"
			set style data histograms
			set style fill solid 0.8 border -1
			set grid ytics
			set yrange [0:*]
			set title "time to the last node / one node alone"
			plot '$TMP/hot/hot-$HOT_NODES.dat' using 3:xtic(1) notitle
			set title "most one node sent its peers (x blob)"
			plot '$TMP/hot/hot-$HOT_NODES.dat' using 4:xtic(1) notitle
			unset multiplot
		GP
		echo "chart: $CHART" >&2
	fi
	cat "$REPORT"
	if [[ -n $OUT ]]; then cp "$REPORT" "$OUT"; fi
	exit 0
fi
{
	echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), SCALE=$SCALE LINK=$LINK"
} >"$REPORT"
for n in $NODES; do
	"$TMP/clusterbench" -berth "$TMP/berth" -registry "$(command -v docker-registry)" \
		-nodes "$n" -link "$LINK" -scale "$SCALE" -out "$TMP/n$n" | tee -a "$REPORT"
done

# One row per mode: create p99 and upstream/image for each N.
DAT=$TMP/chart.dat
{
	printf '# mode'; for n in $NODES; do printf ' p99_%s up_%s' "$n" "$n"; done; echo
	for mode in direct single cluster; do
		printf '%s' "$mode"
		for n in $NODES; do
			awk -v m="$mode" '$1 == m { printf " %s %s", $3, $6 }' "$TMP/n$n/cluster-$n.dat"
		done
		echo
	done
} >"$DAT"

if [[ -n $CHART ]] && command -v gnuplot >/dev/null; then
	cols=() i=2
	for n in $NODES; do cols+=("$i:$n"); i=$((i + 2)); done
	plot1="" plot2=""
	for c in "${cols[@]}"; do
		col=${c%%:*} n=${c##*:}
		plot1+="'$DAT' using $col:xtic(1) title '$n nodes',"
		plot2+="'$DAT' using $((col + 1)):xtic(1) title '$n nodes',"
	done
	gnuplot <<-GP
		set terminal pngcairo size 1000,420 font ",10"
		set output '$CHART'
		set multiplot layout 1,2 title "berth cluster benchmark (link $LINK B/s shared, image scale $SCALE)"
		set style data histograms
		set style histogram clustered gap 1
		set style fill solid 0.8 border -1
		set key top right
		set grid ytics
		set yrange [0:*]
		set offsets graph 0, graph 0, graph 0.12, 0
		set title "create phase: p99 pull time (s)"
		plot ${plot1%,}
		set title "create phase: upstream bytes / image size"
		plot ${plot2%,}
		unset multiplot
	GP
	echo "chart: $CHART" >&2
fi
cat "$REPORT"
if [[ -n $OUT ]]; then cp "$REPORT" "$OUT"; fi
