package registry

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-mirror/berth/internal/fetch"
)

// errClientGone means a write to the client failed: it went away.
var errClientGone = errors.New("registry: client went away")

// follow streams a fill in progress to one client and returns the bytes
// sent. With a known length it sends by sendfile from its own handle on the
// fill's file (no user-space buffer); otherwise, or where the file cannot be
// reopened, it copies through a pooled buffer.
func (h *Handler) follow(w http.ResponseWriter, rd *fetch.Reader, dg digest.Digest, sized bool) (int64, error) {
	rf, isRF := w.(io.ReaderFrom)
	if sized && isRF {
		if f, err := rd.OpenFile(); err == nil {
			defer f.Close()
			if _, err := f.Seek(rd.Offset(), io.SeekStart); err == nil {
				adviseSequential(f)
				return followSendfile(w, rf, rd, f)
			}
		}
	}
	return h.followCopy(w, rd, dg)
}

// followBatch is the least a follower waits for before one sendfile: the
// standard library allocates a few small objects per sendfile call, so
// batching keeps that to a handful per MiB rather than per network read.
const followBatch = 1 << 20

// followSendfile hands each newly landed range to net/http's ReadFrom as an
// io.LimitedReader over an *os.File, which reaches sendfile. One
// LimitedReader serves every range.
func followSendfile(w http.ResponseWriter, rf io.ReaderFrom, rd *fetch.Reader, f io.Reader) (int64, error) {
	rc := http.NewResponseController(w)
	lr := &io.LimitedReader{R: f}
	var sent int64
	for {
		n, err := rd.NextMin(followBatch)
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
		// After the commit n can be the whole rest of the blob: give the
		// write time for its size, not one chunk's idle timeout.
		_ = rc.SetWriteDeadline(deadlineFor(n))
		lr.N = n
		m, werr := rf.ReadFrom(lr)
		rd.Advance(m)
		sent += m
		if werr != nil || m < n {
			return sent, errClientGone
		}
	}
}

// followCopy copies through a pooled buffer, taken only while bytes go
// through it: once the fill commits, the rest goes out from the store by
// sendfile.
func (h *Handler) followCopy(w http.ResponseWriter, rd *fetch.Reader, dg digest.Digest) (int64, error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			fetch.PutBuffer(bp)
		}
	}()
	rc := http.NewResponseController(w)
	var sent int64
	for {
		if ok, off, end := rd.Committed(); ok && end > off {
			if bp != nil {
				fetch.PutBuffer(bp)
				bp = nil
			}
			n, served := h.sendStored(w, dg, off, end-off)
			sent += n
			if served {
				return sent, nil
			}
		}
		if bp == nil {
			bp = fetch.GetBuffer()
		}
		n, rerr := rd.Read(*bp)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(writeIdleTimeout))
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return sent, errClientGone
			}
			sent += int64(n)
		}
		if rerr == io.EOF {
			return sent, nil
		}
		if rerr != nil {
			return sent, rerr
		}
	}
}
