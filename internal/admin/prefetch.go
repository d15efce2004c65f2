package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// Prefetch limits.
const (
	maxPrefetchImages = 1000
	maxRunningJobs    = 8
	maxKeptJobs       = 256
)

// Job and image states.
const (
	StatePending = "pending"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// PrefetchParams are the params of images.prefetch.
type PrefetchParams struct {
	// Images are references as a client would pull them: registry.example.com/team/app:v1,
	// alpine (docker.io/library/alpine:latest), app@sha256:….
	Images []string `json:"images"`
	// Platforms (os/arch[/variant]) fetched from an index besides the node's own.
	Platforms []string `json:"platforms,omitempty"`
}

// PrefetchResult is the result of images.prefetch.
type PrefetchResult struct {
	Job string `json:"job"`
}

// JobParams are the params of jobs.get.
type JobParams struct {
	Job string `json:"job"`
}

// Job is the state of a prefetch job (the result of jobs.get).
type Job struct {
	ID    string `json:"id"`
	State string `json:"state"` // running, done or failed (one image or more failed)
	// BytesDone and BytesTotal sum the images'; the total grows as manifests
	// are read.
	BytesDone  int64           `json:"bytes_done"`
	BytesTotal int64           `json:"bytes_total"`
	Images     []ImageProgress `json:"images"`
	Started    time.Time       `json:"started"`
	Finished   *time.Time      `json:"finished,omitempty"`
}

// ImageProgress is one image of a job.
type ImageProgress struct {
	Ref        string `json:"ref"`
	State      string `json:"state"` // pending, running, done or failed
	Error      string `json:"error,omitempty"`
	Digest     string `json:"digest,omitempty"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// jobs holds running and recently finished jobs.
type jobs struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	byID  map[string]*job
	order []string // oldest first
}

func newJobs() *jobs {
	ctx, cancel := context.WithCancel(context.Background())
	return &jobs{ctx: ctx, cancel: cancel, byID: map[string]*job{}}
}

func (js *jobs) close() {
	js.cancel()
	js.wg.Wait()
}

func (js *jobs) running() int {
	js.mu.Lock()
	defer js.mu.Unlock()
	n := 0
	for _, j := range js.byID {
		if j.snapshot().State == StateRunning {
			n++
		}
	}
	return n
}

// job is one prefetch; its images are pulled one after another.
type job struct {
	mu  sync.Mutex
	v   Job
	ref []imageRef
}

func (j *job) snapshot() Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := j.v
	v.Images = append([]ImageProgress(nil), j.v.Images...)
	return v
}

// imageProgress updates one image of a job (and the job's sums).
type imageProgress struct {
	j *job
	i int
}

func (p imageProgress) addTotal(n int64) {
	p.j.mu.Lock()
	p.j.v.Images[p.i].BytesTotal += n
	p.j.v.BytesTotal += n
	p.j.mu.Unlock()
}

func (p imageProgress) addDone(n int64) {
	p.j.mu.Lock()
	p.j.v.Images[p.i].BytesDone += n
	p.j.v.BytesDone += n
	p.j.mu.Unlock()
}

func (p imageProgress) setDigest(d string) {
	p.j.mu.Lock()
	p.j.v.Images[p.i].Digest = d
	p.j.mu.Unlock()
}

func (p imageProgress) setState(state string, err error) {
	p.j.mu.Lock()
	p.j.v.Images[p.i].State = state
	if err != nil {
		p.j.v.Images[p.i].Error = err.Error()
	}
	p.j.mu.Unlock()
}

func (s *Service) prefetch(_ context.Context, p PrefetchParams) (PrefetchResult, error) {
	if len(p.Images) == 0 {
		return PrefetchResult{}, Errorf(CodeInvalidParams, "invalid params: images: give at least one image reference")
	}
	if len(p.Images) > maxPrefetchImages {
		return PrefetchResult{}, Errorf(CodeInvalidParams, "invalid params: images: at most %d per job", maxPrefetchImages)
	}
	want := []platform{nodePlatform()}
	for i, ps := range p.Platforms {
		pl, err := parsePlatform(ps)
		if err != nil {
			return PrefetchResult{}, Errorf(CodeInvalidParams, "invalid params: platforms[%d]: %v", i, err)
		}
		want = append(want, pl)
	}
	j := &job{v: Job{State: StateRunning, Started: time.Now().UTC()}}
	for i, img := range p.Images {
		r, err := parseImageRef(img)
		if err != nil {
			return PrefetchResult{}, Errorf(CodeInvalidParams, "invalid params: images[%d]: %v", i, err)
		}
		j.ref = append(j.ref, r)
		j.v.Images = append(j.v.Images, ImageProgress{Ref: img, State: StatePending})
	}
	if err := s.jobs.add(j); err != nil {
		return PrefetchResult{}, err
	}
	s.log.Info("prefetch started", "job", j.v.ID, "images", len(j.ref), "platforms", p.Platforms)
	s.jobs.wg.Go(func() { s.run(s.jobs.ctx, j, want) })
	return PrefetchResult{Job: j.v.ID}, nil
}

// add registers j under a new id, forgetting the oldest finished jobs past
// maxKeptJobs.
func (js *jobs) add(j *job) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.ctx.Err() != nil {
		return Errorf(CodeServer, "the admin service is shutting down")
	}
	running := 0
	for _, o := range js.byID {
		if o.snapshot().State == StateRunning {
			running++
		}
	}
	if running >= maxRunningJobs {
		return Errorf(CodeServer, "%d prefetch jobs are running already; wait for one to finish", running)
	}
	j.v.ID = hex.EncodeToString(b[:])
	js.byID[j.v.ID] = j
	js.order = append(js.order, j.v.ID)
	for i := 0; len(js.byID) > maxKeptJobs && i < len(js.order); {
		id := js.order[i]
		if js.byID[id].snapshot().State == StateRunning {
			i++
			continue
		}
		delete(js.byID, id)
		js.order = append(js.order[:i], js.order[i+1:]...)
	}
	return nil
}

// maxManifestBytes is the cap on a manifest in force: one cap for /v2/,
// the peer API and prefetch.
func (s *Service) maxManifestBytes() int64 {
	if s.d.MaxManifestBytes != nil {
		return s.d.MaxManifestBytes()
	}
	return int64(s.d.Config().MaxManifestBytes)
}

func (s *Service) run(ctx context.Context, j *job, want []platform) {
	p := &puller{h: s.d.Registry, log: s.log, maxManifest: s.maxManifestBytes}
	failed := 0
	defer func() {
		// A bug here must not take the daemon down with it: fail the job.
		if r := recover(); r != nil {
			s.log.Error("prefetch job panicked", "job", j.v.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			j.finish(1)
		}
	}()
	for i, ref := range j.ref {
		pr := imageProgress{j: j, i: i}
		pr.setState(StateRunning, nil)
		err := p.pull(ctx, ref, want, pr)
		if err != nil {
			failed++
			pr.setState(StateFailed, err)
			s.log.Warn("prefetch failed", "job", j.v.ID, "image", j.v.Images[i].Ref, "error", err)
			continue
		}
		pr.setState(StateDone, nil)
	}
	done, total := j.finish(failed)
	s.log.Info("prefetch finished", "job", j.v.ID, "images", len(j.ref), "failed", failed, "bytes", done, "bytes_total", total)
}

// finish marks j done, or failed when images failed; it returns the bytes
// done and expected.
func (j *job) finish(failed int) (done, total int64) {
	now := time.Now().UTC()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.v.State = StateDone
	if failed > 0 {
		j.v.State = StateFailed
	}
	j.v.Finished = &now
	return j.v.BytesDone, j.v.BytesTotal
}

func (s *Service) jobGet(_ context.Context, p JobParams) (Job, error) {
	if p.Job == "" {
		return Job{}, Errorf(CodeInvalidParams, "invalid params: job: required")
	}
	s.jobs.mu.Lock()
	j, ok := s.jobs.byID[p.Job]
	s.jobs.mu.Unlock()
	if !ok {
		return Job{}, Errorf(CodeNotFound, "no job %q (finished jobs are kept for a while, the last %d at most)", truncate(p.Job, 64), maxKeptJobs)
	}
	return j.snapshot(), nil
}
