package bench

import (
	"sort"
	"time"
)

// Hist is a latency histogram with 10µs buckets up to 10ms and 1ms buckets
// up to 10s (beyond: the last bucket). Fixed buckets merge exactly across
// load-client processes, which sampled quantiles would not. The zero value
// is empty and ready; it is not safe for concurrent use.
type Hist struct {
	Counts map[int]uint64 `json:"c,omitempty"` // sparse: bucket -> count
	N      uint64         `json:"n"`
	MaxNs  int64          `json:"max_ns"`
}

const (
	fineStep   = 10 * time.Microsecond
	fineLimit  = 10 * time.Millisecond
	coarseStep = time.Millisecond
	lastBucket = int(fineLimit/fineStep) + int((10*time.Second-fineLimit)/coarseStep)
)

func bucketOf(d time.Duration) int {
	switch {
	case d < 0:
		return 0
	case d < fineLimit:
		return int(d / fineStep)
	}
	b := int(fineLimit/fineStep) + int((d-fineLimit)/coarseStep)
	if b > lastBucket {
		b = lastBucket
	}
	return b
}

// upper is the upper edge of bucket b: quantiles are reported pessimistically.
func upper(b int) time.Duration {
	fine := int(fineLimit / fineStep)
	if b < fine {
		return time.Duration(b+1) * fineStep
	}
	return fineLimit + time.Duration(b-fine+1)*coarseStep
}

// Add records one latency.
func (h *Hist) Add(d time.Duration) {
	if h.Counts == nil {
		h.Counts = make(map[int]uint64)
	}
	h.Counts[bucketOf(d)]++
	h.N++
	if int64(d) > h.MaxNs {
		h.MaxNs = int64(d)
	}
}

// Merge adds o into h.
func (h *Hist) Merge(o Hist) {
	if len(o.Counts) > 0 && h.Counts == nil {
		h.Counts = make(map[int]uint64, len(o.Counts))
	}
	for b, c := range o.Counts {
		h.Counts[b] += c
	}
	h.N += o.N
	if o.MaxNs > h.MaxNs {
		h.MaxNs = o.MaxNs
	}
}

// Quantile returns the upper edge of the bucket holding quantile q (0..1),
// capped by the maximum seen; 0 when empty.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	keys := make([]int, 0, len(h.Counts))
	for b := range h.Counts {
		keys = append(keys, b)
	}
	sort.Ints(keys)
	rank := uint64(q*float64(h.N) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for _, b := range keys {
		seen += h.Counts[b]
		if seen >= rank {
			if u := upper(b); int64(u) < h.MaxNs {
				return u
			}
			return time.Duration(h.MaxNs)
		}
	}
	return time.Duration(h.MaxNs)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
