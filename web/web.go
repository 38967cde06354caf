// Package web serves the browser demo of the msync JavaScript SDK at /demo/
// on the logic HTTP listener of `msync all`: a page that connects to the
// comet's WebSocket listener, shows the oplogs it receives live, and
// publishes through POST /v1/sync.
//
// DEVELOPMENT ONLY. In development mode (the config's dev: true) GET
// /demo/token mints client tokens for any user with the server's secret, but
// only for a request whose Host (and Origin, when sent) is a loopback name,
// so a page on another site cannot use it through DNS rebinding. The API key
// is never served: the page takes it from its URL (?key=) or a pasted value.
// Outside development mode token minting answers 403 and the page only works
// with a token and an API key pasted by hand.
//
// The handler is goroutine-safe and owns no goroutine.
package web

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/oplog"
	jssdk "github.com/msync/msync/sdk/js"
)

// Prefix is the path the handler expects to be mounted at.
const Prefix = "/demo/"

// ErrConfig wraps every Config validation failure of New.
var ErrConfig = errors.New("web: bad config")

//go:embed static
var static embed.FS

// Config configures the demo handler. Zero values take the defaults noted
// per field.
type Config struct {
	// Tokens signs the tokens of GET /demo/token. Required.
	Tokens *auth.Tokens
	// Dev is development mode: /demo/token mints tokens for loopback
	// callers. False: it answers 403 and the page asks for a pasted token.
	Dev bool
	// WSAddr returns the bound address of the comet's WebSocket listener,
	// or nil when there is none. It is called per request because the
	// comet binds after the logic HTTP handler is built. Nil: no listener.
	WSAddr func() net.Addr
	// WSPath is the WebSocket upgrade path. Zero: "/sub".
	WSPath string
	// TokenTTL is the validity of minted tokens. Zero: 1h.
	TokenTTL time.Duration
	// Logger receives logs. Nil discards.
	Logger *slog.Logger
}

// New returns the handler for Prefix.
func New(cfg Config) (http.Handler, error) {
	if cfg.Tokens == nil {
		return nil, fmt.Errorf("%w: Tokens is required", ErrConfig)
	}
	if cfg.WSPath == "" {
		cfg.WSPath = "/sub"
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.TokenTTL < 0 {
		return nil, fmt.Errorf("%w: TokenTTL %s: want > 0", ErrConfig, cfg.TokenTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Dev {
		cfg.Logger.Warn("demo page mints client tokens for any user at " + Prefix + "token for callers on this machine (dev: true); never in production")
	}
	page, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	sdk, err := fs.Sub(jssdk.Files, "src")
	if err != nil {
		return nil, err
	}
	d := &demo{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET "+Prefix+"sdk/", http.StripPrefix(Prefix+"sdk/", http.FileServerFS(sdk)))
	mux.HandleFunc("GET "+Prefix+"config.json", d.config)
	mux.HandleFunc("GET "+Prefix+"token", d.token)
	mux.Handle("GET "+Prefix, http.StripPrefix(Prefix, http.FileServerFS(page)))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, errBody("method_not_allowed", "use GET"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A development page: never let a browser serve a stale SDK.
		w.Header().Set("Cache-Control", "no-cache")
		mux.ServeHTTP(w, r)
	}), nil
}

type demo struct{ cfg Config }

// pageConfig is GET /demo/config.json.
type pageConfig struct {
	// WSPort and WSHost locate the comet's WebSocket listener; WSHost is
	// empty when it listens on all interfaces, and the page then uses its
	// own host name.
	WSPort int    `json:"ws_port"`
	WSHost string `json:"ws_host"`
	WSPath string `json:"ws_path"`
	// Dev is true in development mode (token minting works).
	Dev bool `json:"dev"`
}

func (d *demo) config(w http.ResponseWriter, _ *http.Request) {
	c := pageConfig{WSPath: d.cfg.WSPath, Dev: d.cfg.Dev}
	if d.cfg.WSAddr != nil {
		if a, ok := d.cfg.WSAddr().(*net.TCPAddr); ok && a != nil {
			c.WSPort = a.Port
			if !a.IP.IsUnspecified() {
				c.WSHost = a.IP.String()
			}
		}
	}
	writeJSON(w, http.StatusOK, c)
}

func (d *demo) token(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.Dev {
		writeJSON(w, http.StatusForbidden, errBody("forbidden",
			"token minting is a development feature, enabled only with dev: true; paste a token minted by your business server (or `msync token --user U`)"))
		return
	}
	if !loopbackHost(r.Host) || (r.Header.Get("Origin") != "" && !loopbackOrigin(r.Header.Get("Origin"))) {
		writeJSON(w, http.StatusForbidden, errBody("forbidden",
			"token minting answers only pages loaded from this machine (Host and Origin 127.0.0.1, ::1 or localhost)"))
		return
	}
	user := r.URL.Query().Get("user")
	if err := oplog.ValidID("user", user); err != nil {
		writeJSON(w, http.StatusBadRequest, errBody("bad_request", err.Error()))
		return
	}
	tok, err := d.cfg.Tokens.Sign(user, d.cfg.TokenTTL)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errBody("internal", err.Error()))
		return
	}
	d.cfg.Logger.Info("demo: minted a development token", "user", user, "ttl", d.cfg.TokenTTL)
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "user": user, "expires_in_s": int(d.cfg.TokenTTL.Seconds())})
}

// loopbackHost reports whether a Host header names this machine.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func loopbackOrigin(origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && loopbackHost(u.Host)
}

func errBody(code, msg string) map[string]any {
	return map[string]any{"error": map[string]string{"code": code, "message": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the browser may be gone; nobody to tell
}
