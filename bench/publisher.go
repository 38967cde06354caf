package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// publisher calls the business HTTP API. Payloads are the call's start time
// in decimal unix nanoseconds, which load clients turn into latency.
type publisher struct {
	api, key string
	hc       *http.Client
	ok, fail atomic.Uint64
	errMu    sync.Mutex
	lastErr  error
}

func newPublisher(api, key string, conns int) *publisher {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second}
	return &publisher{api: api, key: key, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (p *publisher) close() { p.hc.CloseIdleConnections() }

// item is one oplog to publish: owner is "user", "device" or "global".
type item struct{ biz, field, owner string }

func (p *publisher) note(err error) {
	p.errMu.Lock()
	p.lastErr = err
	p.errMu.Unlock()
}

// publish sends items in one call: POST /v1/sync for one item unless batch,
// else POST /v1/sync/batch. It counts successes and failures per item.
func (p *publisher) publish(ctx context.Context, items []item, batch bool) {
	var b bytes.Buffer
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	writeItem := func(it item) {
		b.WriteString(`{"biz":"`)
		b.WriteString(it.biz)
		if it.field == "global" {
			b.WriteString(`","global":true`)
		} else {
			b.WriteString(`","` + it.field + `":"`)
			b.WriteString(it.owner)
			b.WriteString(`"`)
		}
		b.WriteString(`,"payload":"` + ts + `"}`)
	}
	path := "/v1/sync"
	if batch || len(items) > 1 {
		path = "/v1/sync/batch"
		b.WriteString(`{"items":[`)
		for i, it := range items {
			if i > 0 {
				b.WriteByte(',')
			}
			writeItem(it)
		}
		b.WriteString(`]}`)
	} else {
		writeItem(items[0])
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.api+path, &b)
	if err != nil {
		p.fail.Add(uint64(len(items)))
		p.note(err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+p.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		p.fail.Add(uint64(len(items)))
		p.note(err)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		p.fail.Add(uint64(len(items)))
		p.note(fmt.Errorf("%s %s: %s", path, resp.Status, bytes.TrimSpace(body)))
		return
	}
	if path == "/v1/sync" {
		p.ok.Add(1)
		return
	}
	var out struct {
		Results []struct {
			ID    uint64          `json:"id"`
			Error json.RawMessage `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		p.fail.Add(uint64(len(items)))
		p.note(err)
		return
	}
	for _, r := range out.Results {
		if r.ID > 0 && r.Error == nil {
			p.ok.Add(1)
		} else {
			p.fail.Add(1)
			p.note(fmt.Errorf("batch item: %s", r.Error))
		}
	}
}

// paced publishes at rate items/s for d (or until total items when total >
// 0 and rate == 0: as fast as workers go), in calls of batch items, item j
// going to owner(j). It returns the achieved rate in items/s.
func (p *publisher) paced(ctx context.Context, rate float64, d time.Duration, total, batch, workers int, owner func(j int) item) float64 {
	if batch <= 0 {
		batch = 1
	}
	p.ok.Store(0)
	p.fail.Store(0)
	jobs := make(chan []item, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for items := range jobs {
				p.publish(ctx, items, batch > 1)
			}
		}()
	}
	start := time.Now()
	j := 0
	interval := time.Duration(0)
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(batch) / rate)
	}
	next := start
	for ctx.Err() == nil {
		if total > 0 && j >= total {
			break
		}
		if total <= 0 && time.Since(start) >= d {
			break
		}
		n := batch
		if total > 0 {
			n = min(batch, total-j)
		}
		items := make([]item, n)
		for i := range items {
			items[i] = owner(j)
			j++
		}
		if interval > 0 {
			next = next.Add(interval)
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
		}
		select {
		case jobs <- items: // blocks when the server falls behind: the achieved rate shows it
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	el := time.Since(start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.ok.Load()+p.fail.Load()) / el
}
