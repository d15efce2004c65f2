package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// The hot-blob scenario (issue 18): every node pulls one big cold blob at
// the same moment, through one shared upstream link, each node's peer
// uploads capped (cluster.upload_rate, standing for its NIC on loopback).
// Modes:
//   - direct: every node through the link, no mirror;
//   - whole: a berth cluster fetching each blob whole from its one owner
//     (piece_fetches: 0, as before pieces): the owner's uplink carries the
//     cluster's demand;
//   - pieces: a berth cluster with pieces, each piece owned by its own node.
// A reference run pulls the blob through one lone berth. It reports the
// time to the last node, the most any node sent its peers, and the upstream
// bytes, each against the blob.

type hotResult struct {
	mode     string
	times    []time.Duration
	upstream int64
	maxOut   float64 // the most one node sent its peers, bytes
	peakRSS  int64   // KiB, max over nodes
	failed   int
}

func runHot(o options) error {
	if o.out == "" {
		d, err := os.MkdirTemp("", "clusterbench-hot-")
		if err != nil {
			return err
		}
		o.out = d
	}
	var procs procSet
	defer procs.stopAll()
	reg, err := startRegistry(&procs, o)
	if err != nil {
		return err
	}
	size := o.blobMiB << 20
	modes := strings.Split(o.modes, ",")
	if o.modes == "direct,single,cluster" { // the image scenario's default
		modes = []string{"direct", "whole", "pieces"}
	}
	// One image per run (alone, then each mode), so every run is cold.
	tags := append([]string{"alone"}, modes...)
	for _, tag := range tags {
		if err := pushImage(reg, "bench/hot", tag, []int{size}); err != nil {
			return err
		}
	}
	link, err := startLink(reg, o.link)
	if err != nil {
		return err
	}
	defer link.close()

	// Reference: one node alone through berth.
	one := o
	one.nodes = 1
	nodes, err := startNodes(&procs, link, one, "alone")
	if err != nil {
		return err
	}
	alone, err := pull(nodes[0].base(), "bench/hot", "alone")
	stop(nodes[0].cmd)
	if err != nil {
		return fmt.Errorf("alone: %w", err)
	}
	fmt.Fprintf(os.Stderr, "one node alone pulls the %d MiB blob in %s\n", o.blobMiB, alone.Round(time.Millisecond))

	var rs []hotResult
	for _, mode := range modes {
		r, err := runHotMode(&procs, link, o, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		rs = append(rs, r)
		fmt.Fprintf(os.Stderr, "%s done\n", mode)
	}
	return reportHot(o, alone, float64(size), rs)
}

func runHotMode(procs *procSet, l *link, o options, mode string) (hotResult, error) {
	r := hotResult{mode: mode}
	no := o
	no.env = nil
	if o.upload > 0 {
		no.env = append(no.env, fmt.Sprintf("BERTH_CLUSTER_UPLOAD_RATE=%.0f", o.upload))
	}
	if mode == "whole" {
		no.env = append(no.env, "BERTH_PIECE_FETCHES=0")
	}
	name := mode
	if mode != "direct" {
		name = "cluster-" + mode
	}
	nodes, bases, stopAll, err := modeNodes(procs, l, no, name)
	if err != nil {
		return r, err
	}
	defer stopAll()
	before := l.bytes.Load()
	var tag = mode
	r.times = make([]time.Duration, len(bases))
	done := make(chan int, len(bases))
	for i, b := range bases {
		go func() {
			d, err := pull(b, "bench/hot", tag)
			if err != nil {
				fmt.Fprintf(os.Stderr, "pull %s: %v\n", b, err)
				d = -1
			}
			r.times[i] = d
			done <- i
		}()
	}
	for range bases {
		<-done
	}
	for _, d := range r.times {
		if d < 0 {
			r.failed++
		}
	}
	r.upstream = l.bytes.Load() - before
	for _, n := range nodes {
		r.maxOut = max(r.maxOut, scrape(n.url, "berth_peer_bytes_total", `direction="out"`))
		r.peakRSS = max(r.peakRSS, peakRSS(n.cmd.Process.Pid))
	}
	return r, nil
}

func reportHot(o options, alone time.Duration, blob float64, rs []hotResult) error {
	data, err := os.Create(fmt.Sprintf("%s/hot-%d.dat", o.out, o.nodes))
	if err != nil {
		return err
	}
	defer data.Close()
	fmt.Fprintln(data, "# mode last_s last_over_alone max_peer_out_x upstream_x")
	up := "none"
	if o.upload > 0 {
		up = fmt.Sprintf("%.0f MiB/s", o.upload/(1<<20))
	}
	fmt.Printf("\nhot blob: %d nodes, %d MiB blob, shared link %.0f MiB/s, per-node peer upload cap %s; one node alone through berth: %.2f s\n\n",
		o.nodes, o.blobMiB, o.link/(1<<20), up, alone.Seconds())
	fmt.Println("| mode | first node | last node | last / alone | most sent to peers by one node (× blob) | upstream bytes (× blob) | peak RSS per node (max) | failed pulls |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		ts := slices.Clone(r.times)
		slices.Sort(ts)
		first, last := ts[0], ts[len(ts)-1]
		rss, out := "–", "–"
		if r.mode != "direct" {
			rss = fmt.Sprintf("%.1f MiB", float64(r.peakRSS)/1024)
			out = fmt.Sprintf("%.2f", r.maxOut/blob)
		}
		fmt.Printf("| %s | %.2f s | %.2f s | %.2f | %s | %.2f | %s | %d |\n", r.mode, first.Seconds(), last.Seconds(),
			last.Seconds()/alone.Seconds(), out, float64(r.upstream)/blob, rss, r.failed)
		fmt.Fprintf(data, "%s %.3f %.3f %.3f %.3f\n", r.mode, last.Seconds(), last.Seconds()/alone.Seconds(), r.maxOut/blob, float64(r.upstream)/blob)
		if r.failed > 0 {
			err = fmt.Errorf("%s: %d pulls failed", r.mode, r.failed)
		}
	}
	return err
}
