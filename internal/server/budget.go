package server

import "github.com/berth-mirror/berth/internal/config"

// What client connections may cost at most, so that max_connections and
// max_header_bytes can be set against the container's memory limit (README,
// "Memory"). The figures are upper bounds measured by
// TestHeaderMemoryPerConnection, not estimates.

// headerSlack is what the connection gate reads past max_header_bytes before
// it answers 431 itself: the request line and line ends, which the handler's
// count leaves out, and net/http's 4 KiB read-ahead into what follows the
// headers. Between max_header_bytes and the cap the handler answers the 431.
const headerSlack = 8 << 10

// maxHeaderLines caps the lines of one request's header section (the gate
// counts them with the bytes, read-ahead included). Registry clients send a
// dozen.
const maxHeaderLines = 512

// headerCap is the most a connection reads of one request's header section.
func headerCap(maxHeaderBytes int) int { return maxHeaderBytes + headerSlack }

const (
	// headerAmplification: a header section is held up to this many times
	// over while net/http parses it: the bytes read, the line being
	// assembled, the header map's strings, slices and entries (many short
	// header lines cost far more in map entries than their bytes).
	headerAmplification = 2
	// connOverhead is what a connection costs besides its headers: net/http's
	// buffered reader and writer, the goroutine's stack, the response, and the
	// 32 KiB copy buffer where a body cannot go by sendfile.
	connOverhead = 64 << 10
	// fixedAllowance is everything that does not grow with connections: the
	// binary's pages, the runtime, the store's database, max_fetches fills
	// (DESIGN.md: peak RSS <= 48 MiB under 64 concurrent pulls), and the
	// garbage collector's headroom.
	fixedAllowance = 56 << 20
)

// connMemory is the most one connection holds.
func connMemory(maxHeaderBytes int) int64 {
	return headerAmplification*int64(headerCap(maxHeaderBytes)) + connOverhead
}

// connectionsMemory is the most cfg's connections hold together, the probe
// reserve included (0 when max_connections is 0: unbounded).
func connectionsMemory(cfg config.Config) int64 {
	if cfg.MaxConnections <= 0 {
		return 0
	}
	return int64(cfg.MaxConnections+probeReserve) * connMemory(int(cfg.MaxHeaderBytes))
}
