package peer

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// heartbeatWriter sends "102 Processing" every interval until the handler
// starts its answer. The handler's headers are kept apart until then: a 1xx
// response carries the writer's current headers, and the handler sets them
// from its own goroutine. It also notes whether the handler wrote and how
// many bytes, for the error answer and Served.
type heartbeatWriter struct {
	w      http.ResponseWriter
	every  time.Duration
	header http.Header
	mu     sync.Mutex
	done   bool // the answer has begun (or the request ended): no more beats
	timer  *time.Timer

	// wrote and bytes are the handler's alone (its goroutine).
	wrote bool
	bytes int64
}

func startHeartbeat(w http.ResponseWriter, every time.Duration) *heartbeatWriter {
	hb := &heartbeatWriter{w: w, every: every, header: http.Header{}}
	hb.mu.Lock()
	hb.timer = time.AfterFunc(every, hb.beat)
	hb.mu.Unlock()
	return hb
}

func (hb *heartbeatWriter) beat() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return
	}
	hb.w.WriteHeader(http.StatusProcessing) // net/http sends and flushes a 1xx at once
	hb.timer.Reset(hb.every)
}

// answer stops the beats and hands the handler's headers to the connection.
func (hb *heartbeatWriter) answer() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return
	}
	hb.done = true
	hb.timer.Stop()
	dst := hb.w.Header()
	for k, v := range hb.header {
		dst[k] = v
	}
}

// end stops the beats when the handler returns; a beat waiting for the
// lock then sees done and leaves the connection alone.
func (hb *heartbeatWriter) end() { hb.answer() }

func (hb *heartbeatWriter) Header() http.Header {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	if hb.done {
		return hb.w.Header()
	}
	return hb.header
}

func (hb *heartbeatWriter) WriteHeader(code int) {
	hb.answer()
	hb.wrote = true
	hb.w.WriteHeader(code)
}

func (hb *heartbeatWriter) Write(p []byte) (int, error) {
	hb.answer()
	hb.wrote = true
	n, err := hb.w.Write(p)
	hb.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the sendfile path: net/http's response implements
// io.ReaderFrom and hands an *os.File to the kernel.
func (hb *heartbeatWriter) ReadFrom(src io.Reader) (int64, error) {
	hb.answer()
	hb.wrote = true
	var n int64
	var err error
	if rf, ok := hb.w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{hb.w}, src)
	}
	hb.bytes += n
	return n, err
}

// Flush begins the answer: http.ResponseController finds it before Unwrap.
func (hb *heartbeatWriter) Flush() {
	hb.answer()
	_ = http.NewResponseController(hb.w).Flush()
}

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (hb *heartbeatWriter) Unwrap() http.ResponseWriter { return hb.w }

// writerOnly hides a writer's ReadFrom, so io.Copy does not call it back.
type writerOnly struct{ io.Writer }
