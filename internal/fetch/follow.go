package fetch

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrClientGone wraps a failed write to the client: it went away. The fill
// goes on; this is no failure of the blob.
var ErrClientGone = errors.New("fetch: client went away")

// followBatch is the least a follower waits for before one sendfile: the
// standard library allocates a few small objects per sendfile call, so
// batching keeps that to a handful per MiB rather than per network read.
const followBatch = 1 << 20

// OnWrite sets a function called before each write to the client with the
// number of bytes about to be written, so the caller can size a write
// deadline to it (a write of the whole committed rest takes longer than one
// chunk). It is called once per write, not per byte; it must not block.
func (r *Reader) OnWrite(fn func(n int64)) { r.onWrite = fn }

func (r *Reader) beforeWrite(n int64) {
	if r.onWrite != nil {
		r.onWrite(n)
	}
}

// WriteTo streams the reader's range to w as the fill lands, and returns
// the bytes written. It holds the last byte until the fill is verified and
// committed, like Read. With a known size and a w that is an io.ReaderFrom
// (net/http's response), it sends by sendfile from a file handle of its own
// in batches of at least a MiB, with no user-space buffer; otherwise it
// copies through a pooled buffer, held only while bytes go through it, and
// sends the rest from the committed file once there is one. A failed write
// returns an error wrapping ErrClientGone; a fill's failure returns its
// error (wrapping ErrVerify for corrupt content), the response then to be
// cut short of its length.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	meta, err := r.Meta()
	if err != nil {
		return 0, err
	}
	if rf, ok := w.(io.ReaderFrom); ok && meta.Size >= 0 {
		if fh, err := r.ownHandle(); err == nil {
			defer fh.Close()
			return r.sendfile(rf, fh)
		}
	}
	return r.copyTo(w)
}

// sendfile hands each newly landed range to rf as an io.LimitedReader over
// fh, which net/http passes to sendfile. One LimitedReader serves every range.
func (r *Reader) sendfile(rf io.ReaderFrom, fh *os.File) (int64, error) {
	lr := &io.LimitedReader{R: fh}
	var sent int64
	for {
		n, err := r.next(followBatch)
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
		r.beforeWrite(n)
		lr.N = n
		m, werr := rf.ReadFrom(lr)
		r.off += m
		sent += m
		if werr != nil || m < n {
			return sent, clientGone(werr)
		}
	}
}

// copyTo copies through a pooled buffer until the fill is committed, then
// sends the rest from the committed file.
func (r *Reader) copyTo(w io.Writer) (int64, error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			PutBuffer(bp)
		}
	}()
	var sent int64
	for {
		if ok, off, end := r.committed(); ok && end > off {
			if fh, err := r.ownHandle(); err == nil {
				if bp != nil {
					PutBuffer(bp)
					bp = nil
				}
				n, err := r.sendRest(w, fh, end-off)
				_ = fh.Close()
				return sent + n, err
			}
		}
		if bp == nil {
			bp = GetBuffer()
		}
		n, rerr := r.Read(*bp)
		if n > 0 {
			r.beforeWrite(int64(n))
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return sent, clientGone(werr)
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

// sendRest sends length bytes of committed content from fh, positioned at
// the reader's offset: by sendfile if w can take a file, else through a
// pooled buffer.
func (r *Reader) sendRest(w io.Writer, fh *os.File, length int64) (int64, error) {
	r.beforeWrite(length)
	lr := &io.LimitedReader{R: fh, N: length}
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(lr)
	} else {
		bp := GetBuffer()
		n, err = io.CopyBuffer(w, lr, *bp)
		PutBuffer(bp)
	}
	r.off += n
	if err != nil || n < length {
		return n, clientGone(err)
	}
	return n, nil
}

// ownHandle opens the fill's content with a file position of its own, at
// the reader's offset, for sendfile (which reads from the position) while
// other readers do the same.
func (r *Reader) ownHandle() (*os.File, error) {
	fh, err := r.reopen()
	if err != nil {
		// Without /proc, committed content can still be opened by name.
		if ok, _, _ := r.committed(); !ok {
			return nil, err
		}
		if fh, _, err = r.f.c.store.OpenBlob(r.f.dg); err != nil {
			return nil, err
		}
	}
	if _, err := fh.Seek(r.off, io.SeekStart); err != nil {
		_ = fh.Close()
		return nil, fmt.Errorf("fetch: seeking in fill of %s: %w", r.f.dg, err)
	}
	return fh, nil
}

func clientGone(err error) error {
	if err == nil {
		return ErrClientGone
	}
	return fmt.Errorf("%w: %w", ErrClientGone, err)
}
