//go:build unix

package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/internal/testutil"
	"github.com/msync/msync/pkg/config"
)

// browserConfig is a real all-in-one node with the development API key (the
// demo's autotest mints a token and publishes with it) and the WebSocket
// listener, on random ports.
const browserConfig = `
secret: browser-test-secret-0123456789
dev: true # short test keys
api_keys:
  - {key: dev-key, bizs: ["*"]}
comet:
  addr: 127.0.0.1:0
  ws_addr: 127.0.0.1:0
  heartbeat: 1s
logic:
  http_addr: 127.0.0.1:0
bizs:
  - {name: demo, target: user, ttl: 7d}
`

// chromiumCandidates are tried in order after $MSYNC_CHROMIUM.
var chromiumCandidates = []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// findChromium returns a headless-capable browser, or ends the test: skipped
// only when MSYNC_SKIP_BROWSER=1 asks for it, failed otherwise, so a CI
// machine without a browser cannot pass by accident.
func findChromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("MSYNC_SKIP_BROWSER") == "1" {
		t.Skip("MSYNC_SKIP_BROWSER=1: the browser SDK end-to-end test is skipped on request")
	}
	cands := chromiumCandidates
	if p := os.Getenv("MSYNC_CHROMIUM"); p != "" {
		cands = []string{p}
	}
	for _, c := range cands {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found (tried %v): this test drives the demo page in a real headless browser. "+
		"Install it (apt-get install -y --no-install-recommends chromium), point MSYNC_CHROMIUM at a binary, "+
		"or set MSYNC_SKIP_BROWSER=1 to skip it", cands)
	return ""
}

// TestBrowserDemo runs the demo page's self-test (?autotest) in headless
// Chromium against a real all-in-one node: the browser SDK connects over the
// comet's WebSocket listener, the page publishes through POST /v1/sync, half
// of the oplogs live and half while disconnected (backlog on reconnect), one
// handler fails once (retry). The test then checks the result itself: every
// published id arrived once, in order, and the server stored the acked point.
func TestBrowserDemo(t *testing.T) {
	chrome := findChromium(t)
	f, err := config.Parse([]byte(browserConfig))
	if err != nil {
		t.Fatal(err)
	}
	node, err := cluster.Start(cluster.Config{File: f, DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := node.Shutdown(ctx); err != nil {
			t.Errorf("node shutdown: %v", err)
		}
	})
	if node.Comet.Addrs().WS == nil {
		t.Fatal("the node has no WebSocket listener although comet.ws_addr is set")
	}
	base := "http://" + node.Logic.HTTPAddr().String()

	const n = 24
	page := fmt.Sprintf("%s/demo/?autotest=1&n=%d&key=dev-key", base, n)
	b := launchChromium(t, chrome)
	res := b.runAutotest(t, page, 90*time.Second)

	var r struct {
		Status    string   `json:"status"`
		Error     string   `json:"error"`
		Problems  []string `json:"problems"`
		Device    string   `json:"device"`
		User      string   `json:"user"`
		Received  []uint64 `json:"received"`
		Published []uint64 `json:"published"`
		Events    []string `json:"events"`
		Steps     []string `json:"steps"`
	}
	if err := json.Unmarshal([]byte(res), &r); err != nil {
		t.Fatalf("autotest result is not JSON: %v: %s", err, res)
	}
	t.Logf("autotest: status %s, steps %v, events %v", r.Status, r.Steps, r.Events)
	if r.Status != "pass" {
		t.Fatalf("autotest failed in the browser: error %q, problems %q", r.Error, r.Problems)
	}
	// Do not take the page's word for it: check order, count and
	// duplicates here as well.
	if len(r.Published) != n {
		t.Fatalf("page published %d oplogs, want %d", len(r.Published), n)
	}
	if !slices.Equal(r.Received, r.Published) {
		t.Fatalf("received %v, published %v", r.Received, r.Published)
	}
	for i := 1; i < len(r.Received); i++ {
		if r.Received[i] != r.Received[i-1]+1 {
			t.Fatalf("ids not dense and increasing at %d: %v", i, r.Received)
		}
	}
	checkInteractive(t, b, base)

	// The browser acked every page: the server's stored point for the
	// device reaches the last id (acks are forwarded in batches, so poll).
	channel := "demo/u/" + r.User
	last := r.Published[n-1]
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := serverPoint(t, base, r.Device, channel); got != last {
			return fmt.Errorf("server sync point of %s/%s = %d, want %d", r.Device, channel, got, last)
		}
		return nil
	})
}

// checkInteractive clicks through the interactive page the way a developer
// would: get a dev token, connect, publish, and see the oplog in the table.
func checkInteractive(t *testing.T, b *browser, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb := b.openTab(t, ctx)
	tb.navigate(t, ctx, base+"/demo/?key=dev-key") // the page never gets the key from the server
	tb.waitString(t, ctx, "the page's config", `document.getElementById('wsurl').value`)
	tb.waitString(t, ctx, "connect", `(() => {
		document.getElementById('user').value = 'clicker';
		document.getElementById('connect').click();
		return 'ok';
	})()`)
	tb.waitString(t, ctx, "connected status", `document.getElementById('status').className === 'on' ? 'yes' : ''`)
	tb.waitString(t, ctx, "publish", `(() => {
		document.getElementById('payload').value = '{"text":"clicked"}';
		document.getElementById('publish').click();
		return 'ok';
	})()`)
	row := tb.waitString(t, ctx, "the published oplog in the table", `document.getElementById('oplogs').textContent`)
	if !strings.Contains(row, "demo/u/clicker") || !strings.Contains(row, `{"text":"clicked"}`) {
		t.Fatalf("interactive page shows %q, want the oplog published to demo/u/clicker", row)
	}
}

func serverPoint(t *testing.T, base, device, channel string) uint64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/devices/"+device+"/sync", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer dev-key")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Channels []struct {
			Channel   string `json:"channel"`
			SyncPoint uint64 `json:"sync_point"`
		} `json:"channels"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET device sync: HTTP %d, %v", resp.StatusCode, err)
	}
	for _, c := range body.Channels {
		if c.Channel == channel {
			return c.SyncPoint
		}
	}
	return 0
}

// ---- headless Chromium over the DevTools protocol ----

type browser struct {
	cmd    *exec.Cmd
	wsURL  string
	stderr *lineTail
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// launchChromium starts headless Chromium with a fresh profile and returns
// once its DevTools endpoint is known. Cleanup kills its process group.
func launchChromium(t *testing.T, chrome string) *browser {
	t.Helper()
	cmd := exec.Command(chrome,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "about:blank")
	// Its own process group, so cleanup ends the renderer and helper
	// processes it forks too, and nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	b := &browser{cmd: cmd, stderr: &lineTail{max: 40}}
	found := make(chan string, 1)
	drained := make(chan struct{})
	go func() { // owned: ends when Chromium's stderr closes (it exited)
		defer close(drained)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			b.stderr.add(line)
			if m := devtoolsRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		<-drained
	})
	select {
	case b.wsURL = <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("Chromium printed no DevTools endpoint within 30s; its stderr:\n%s", b.stderr)
	}
	return b
}

// tab is one browser tab driven over the DevTools protocol.
type tab struct {
	b   *browser
	cdp *cdpConn
	sid string
}

// openTab attaches to a new blank tab; the connection closes with the test.
func (b *browser) openTab(t *testing.T, ctx context.Context) *tab {
	t.Helper()
	cdp, err := dialCDP(ctx, b.wsURL, t)
	if err != nil {
		t.Fatalf("DevTools: %v\nChromium stderr:\n%s", err, b.stderr)
	}
	t.Cleanup(cdp.close)
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := cdp.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatal(err)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := cdp.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		t.Fatal(err)
	}
	tb := &tab{b: b, cdp: cdp, sid: attached.SessionID}
	if err := cdp.call(ctx, tb.sid, "Runtime.enable", nil, nil); err != nil {
		t.Fatal(err)
	}
	return tb
}

func (tb *tab) navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := tb.cdp.call(ctx, tb.sid, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		t.Fatal(err)
	}
}

// waitString evaluates expr (which must return a string) every 100 ms until
// it is non-empty, and returns it.
func (tb *tab) waitString(t *testing.T, ctx context.Context, what, expr string) string {
	t.Helper()
	for {
		var ev struct {
			Result struct {
				Value any `json:"value"`
			} `json:"result"`
			ExceptionDetails any `json:"exceptionDetails"`
		}
		if err := tb.cdp.call(ctx, tb.sid, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &ev); err != nil {
			t.Fatalf("waiting for %s: %v\nChromium stderr:\n%s", what, err, tb.b.stderr)
		}
		if s, _ := ev.Result.Value.(string); s != "" {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last exception: %v)", what, ctx.Err(), ev.ExceptionDetails)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runAutotest opens page in a new tab and waits until the page wrote its
// verdict into #result, logging the page's console and exceptions meanwhile.
func (b *browser) runAutotest(t *testing.T, page string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tb := b.openTab(t, ctx)
	tb.navigate(t, ctx, page)
	return tb.waitString(t, ctx, "the autotest verdict",
		`(() => { const r = document.getElementById('result'); return r && r.dataset.status ? r.textContent : ''; })()`)
}

// cdpConn is a minimal synchronous DevTools protocol client: one call at a
// time; events read while waiting for a reply are logged (console output
// and exceptions of the page) and otherwise ignored.
type cdpConn struct {
	conn net.Conn
	rw   io.ReadWriter
	next int
	t    *testing.T
}

func dialCDP(ctx context.Context, url string, t *testing.T) (*cdpConn, error) {
	conn, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	var r io.Reader = conn
	if br != nil { // bytes the server sent right after the handshake
		r = io.MultiReader(br, conn)
	}
	return &cdpConn{conn: conn, rw: struct {
		io.Reader
		io.Writer
	}{r, conn}, t: t}, nil
}

func (c *cdpConn) close() { _ = c.conn.Close() }

func (c *cdpConn) call(ctx context.Context, session, method string, params any, out any) error {
	c.next++
	id := c.next
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	}
	if err := wsutil.WriteClientText(c.rw, b); err != nil {
		return fmt.Errorf("%s: write: %w", method, err)
	}
	for {
		data, err := wsutil.ReadServerText(c.rw)
		if err != nil {
			if method == "Browser.close" && errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: read: %w", method, err)
		}
		var m struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("%s: bad DevTools message: %w", method, err)
		}
		switch {
		case m.ID == id && m.Error != nil:
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		case m.ID == id:
			if out == nil {
				return nil
			}
			return json.Unmarshal(m.Result, out)
		case m.Method == "Runtime.consoleAPICalled" || m.Method == "Runtime.exceptionThrown":
			c.t.Logf("page %s: %s", m.Method, truncate(string(m.Params), 600))
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// lineTail keeps the last max lines written to it (Chromium's stderr, for
// failure messages).
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (l *lineTail) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
}

func (l *lineTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// testLogger sends the node's warnings and errors to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
