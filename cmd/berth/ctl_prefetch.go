package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/berth-mirror/berth/internal/admin"
)

// isTerminal reports whether w is a terminal (for the progress bar).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

type multiValue []string

func (m *multiValue) String() string     { return strings.Join(*m, ",") }
func (m *multiValue) Set(v string) error { *m = append(*m, v); return nil }

func (c *ctl) prefetch(ctx context.Context, args []string) error {
	fs := c.flags("prefetch")
	var p admin.PrefetchParams
	var platforms multiValue
	fs.Var(&platforms, "platform", "also fetch `OS/ARCH[/VARIANT]` from multi-platform images (repeatable)")
	noWait := fs.Bool("no-wait", false, "print the job id and return; follow it with `call jobs.get`")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("prefetch: give at least one IMAGE")
	}
	p.Images, p.Platforms = pos, platforms
	var sub admin.PrefetchResult
	res, err := c.callRaw(ctx, "images.prefetch", p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(res, &sub); err != nil {
		return err
	}
	if *noWait {
		if c.json {
			return c.printJSON(res)
		}
		_, err := fmt.Fprintln(c.stdout, sub.Job)
		return err
	}
	job, err := c.follow(ctx, sub.Job)
	if err != nil {
		return err
	}
	if job.State == admin.StateFailed {
		return errReported
	}
	return nil
}

// follow polls jobs.get until the job ends, showing progress: a bar redrawn
// in place on a terminal, one line per image otherwise; with --json, only the
// final jobs.get result.
func (c *ctl) follow(ctx context.Context, id string) (admin.Job, error) {
	tty := !c.json && isTerminal(c.stdout)
	reported := map[int]bool{}
	var job admin.Job
	for {
		res, err := c.callRaw(ctx, "jobs.get", admin.JobParams{Job: id})
		if err != nil {
			return job, err
		}
		job = admin.Job{}
		if err := json.Unmarshal(res, &job); err != nil {
			return job, err
		}
		running := job.State == admin.StateRunning
		switch {
		case c.json:
			if !running {
				return job, c.printJSON(res)
			}
		case tty:
			fmt.Fprintf(c.stdout, "\r%s", progressBar(job))
			if !running {
				fmt.Fprintln(c.stdout)
				c.printImages(job, reported)
			}
		default:
			c.printImages(job, reported)
		}
		if !running {
			if !c.json {
				c.printSummary(job)
			}
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, fmt.Errorf("stopped waiting (job %s goes on in berth): %w", id, ctx.Err())
		case <-time.After(c.pollInt):
		}
	}
}

// printImages prints a line for each image that has finished since the last
// call.
func (c *ctl) printImages(job admin.Job, reported map[int]bool) {
	for i, im := range job.Images {
		if reported[i] || (im.State != admin.StateDone && im.State != admin.StateFailed) {
			continue
		}
		reported[i] = true
		if im.State == admin.StateFailed {
			fmt.Fprintf(c.stdout, "%s: failed: %s\n", im.Ref, im.Error)
			continue
		}
		fmt.Fprintf(c.stdout, "%s: done, %s\n", im.Ref, humanBytes(im.BytesTotal))
	}
}

func (c *ctl) printSummary(job admin.Job) {
	failed := 0
	for _, im := range job.Images {
		if im.State == admin.StateFailed {
			failed++
		}
	}
	fmt.Fprintf(c.stdout, "job %s %s: %d of %d images, %s\n", job.ID, job.State,
		len(job.Images)-failed, len(job.Images), humanBytes(job.BytesDone))
}

// progressBar renders [#####.....]  45%  12.3 MiB / 27.0 MiB  1/3 images.
func progressBar(job admin.Job) string {
	const width = 30
	frac := 0.0
	if job.BytesTotal > 0 {
		frac = min(1, float64(job.BytesDone)/float64(job.BytesTotal))
	}
	finished := 0
	for _, im := range job.Images {
		if im.State == admin.StateDone || im.State == admin.StateFailed {
			finished++
		}
	}
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%%  %s / %s  %d/%d images ", strings.Repeat("#", n), strings.Repeat(".", width-n),
		frac*100, humanBytes(job.BytesDone), humanBytes(job.BytesTotal), finished, len(job.Images))
}
