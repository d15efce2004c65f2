# bench/lib.sh — helpers shared by the benchmark scripts (sourced; they define
# die and TMP before calling these).

# free_port prints a TCP port no socket uses (listening or not: an outgoing
# connection's local port in the ephemeral range cannot be listened on either,
# which made a restarted berth fail to bind now and then).
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		if [[ -z $(ss -Htan "sport = :$p") ]]; then echo "$p"; return; fi
	done
	die "no free port"
}

# wait_http URL PID WHAT waits up to 15 s for URL to answer, failing early if
# PID has exited.
wait_http() {
	for _ in $(seq 300); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || die "$3 exited early (logs in $TMP)"
		sleep 0.05
	done
	die "$3 did not answer on $1"
}
