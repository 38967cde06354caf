package web_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/web"
)

func newDemo(t *testing.T, dev bool, ws net.Addr) (http.Handler, *auth.Tokens) {
	t.Helper()
	tokens, err := auth.NewTokens("web-test-secret-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	h, err := web.New(web.Config{Tokens: tokens, Dev: dev, WSAddr: func() net.Addr { return ws }})
	if err != nil {
		t.Fatal(err)
	}
	return h, tokens
}

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	return getFrom(t, h, method, path, "127.0.0.1:3111", "")
}

// getFrom sends a request with the given Host and Origin ("" = none).
func getFrom(t *testing.T, h http.Handler, method, path, host, origin string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, path, nil)
	r.Host = host
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	h.ServeHTTP(w, r)
	return w
}

func TestTokenOnlyInDevMode(t *testing.T) {
	h, tokens := newDemo(t, true, nil)
	w := get(t, h, http.MethodGet, "/demo/token?user=alice")
	if w.Code != http.StatusOK {
		t.Fatalf("token with dev key: %d %s", w.Code, w.Body)
	}
	var body struct{ Token string }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if user, err := tokens.Verify(body.Token); err != nil || user != "alice" {
		t.Fatalf("minted token: user %q, err %v", user, err)
	}
	if w := get(t, h, http.MethodGet, "/demo/token?user="); w.Code != http.StatusBadRequest {
		t.Fatalf("empty user: %d", w.Code)
	}
	if w := get(t, h, http.MethodGet, "/demo/token?user=a%0Ab"); w.Code != http.StatusBadRequest {
		t.Fatalf("control character in user: %d", w.Code)
	}

	// Security review #8: a page of another site (DNS rebinding) gets no token.
	for _, from := range [][2]string{{"evil.example:3111", ""}, {"127.0.0.1:3111", "http://evil.example"}} {
		if w := getFrom(t, h, http.MethodGet, "/demo/token?user=alice", from[0], from[1]); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "eyJ") {
			t.Fatalf("token for Host %q Origin %q: %d %s", from[0], from[1], w.Code, w.Body)
		}
	}
	for _, from := range [][2]string{{"localhost:3111", "http://localhost:3111"}, {"[::1]:3111", ""}} {
		if w := getFrom(t, h, http.MethodGet, "/demo/token?user=alice", from[0], from[1]); w.Code != http.StatusOK {
			t.Fatalf("token for Host %q Origin %q: %d %s", from[0], from[1], w.Code, w.Body)
		}
	}

	prod, _ := newDemo(t, false, nil)
	w = get(t, prod, http.MethodGet, "/demo/token?user=alice")
	if w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "eyJ") {
		t.Fatalf("token without dev key: %d %s", w.Code, w.Body)
	}
}

func TestConfigJSON(t *testing.T) {
	for _, tt := range []struct {
		name     string
		dev      bool
		ws       net.Addr
		wantHost string
		wantPort int
	}{
		{"dev, loopback", true, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3102}, "127.0.0.1", 3102},
		{"all interfaces", false, &net.TCPAddr{IP: net.IPv6unspecified, Port: 4000}, "", 4000},
		{"no listener", false, nil, "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newDemo(t, tt.dev, tt.ws)
			w := get(t, h, http.MethodGet, "/demo/config.json")
			if strings.Contains(w.Body.String(), "dev-key") || strings.Contains(w.Body.String(), "dev_key") {
				t.Fatalf("config.json hands out an API key: %s", w.Body)
			}
			var c struct {
				WSPort int    `json:"ws_port"`
				WSHost string `json:"ws_host"`
				WSPath string `json:"ws_path"`
				Dev    bool   `json:"dev"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &c); err != nil {
				t.Fatal(err)
			}
			if c.WSPort != tt.wantPort || c.WSHost != tt.wantHost || c.WSPath != "/sub" || c.Dev != tt.dev {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

func TestStaticFiles(t *testing.T) {
	h, _ := newDemo(t, false, nil)
	for path, want := range map[string]string{
		"/demo/":              "msync browser demo",
		"/demo/app.js":        "autotest",
		"/demo/sdk/index.js":  "MsyncClient",
		"/demo/sdk/client.js": "class MsyncClient",
		"/demo/sdk/codec.js":  "decodeFrames",
		"/demo/sdk/store.js":  "LocalStorageStore",
	} {
		w := get(t, h, http.MethodGet, path)
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET %s: %d, body without %q", path, w.Code, want)
		}
		if strings.HasSuffix(path, ".js") && !strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
			t.Errorf("GET %s: Content-Type %q: browsers refuse ES modules without a JavaScript type", path, w.Header().Get("Content-Type"))
		}
	}
	if w := get(t, h, http.MethodGet, "/demo/sdk/embed.go"); w.Code != http.StatusNotFound {
		t.Errorf("GET embed.go: %d, want 404", w.Code)
	}
	if w := get(t, h, http.MethodPost, "/demo/token?user=a"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /demo/token: %d, want 405", w.Code)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := web.New(web.Config{}); !errors.Is(err, web.ErrConfig) {
		t.Fatalf("no Tokens: %v", err)
	}
}
