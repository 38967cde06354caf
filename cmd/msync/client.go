package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/msync/msync/pkg/client"
	"github.com/msync/msync/pkg/protocol"
)

const clientUsage = `Usage: msync client --token T --device D --biz B[,B2...] [flags]

Connects to a comet as one device, prints every oplog it receives as one JSON
line on stdout and acknowledges it, and logs connection events on stderr. It
reconnects (with backoff) until interrupted. It exits with an error when the
server refuses the session for good (codes 4xxx) or rejects the token (2xxx):
a fixed --token cannot be renewed, mint a new one.

Output, one line per oplog, in id order per channel:
  {"biz":"chat-unread","channel":"chat-unread/u/alice","id":7,"payload":"{\"n\":3}"}
"payload_base64" replaces "payload" when the payload is not valid UTF-8.
Non-persistent pushes (POST /v1/push) print as {"push":"…","room":"…","created_ms":…}
("room" only for room pushes; "push_base64" for non-UTF-8 payloads).

Example:
  msync client --addr 127.0.0.1:3101 --token "$(msync token --user alice)" \
      --device laptop-1 --biz chat-unread,DEVICE-LOCK --state ./alice-points.json
  msync client --addr ws://127.0.0.1:3102/sub --token "$(msync token --user alice)" \
      --device browser-1 --biz chat-unread

Flags:
`

// clientConfig is what the flags say.
type clientConfig struct {
	addr, token, device, platform, appVersion, state string
	tlsCA                                            string
	bizs, rooms                                      []string
	verbose                                          bool
}

func parseClientFlags(args []string, stderr io.Writer) (clientConfig, error) {
	var cfg clientConfig
	var bizs string
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), clientUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:3101", "comet `ADDRESS`: HOST:PORT (TCP), tls://HOST:PORT, ws://HOST:PORT/sub or wss://HOST:PORT/sub")
	fs.StringVar(&cfg.tlsCA, "tls-ca", "", "PEM `FILE` of the CA to trust for tls:// and wss:// (default: the system roots)")
	fs.StringVar(&cfg.token, "token", "", "signed client `TOKEN` of the user (required)")
	fs.StringVar(&cfg.device, "device", "", "device `ID` of this client (required)")
	fs.StringVar(&bizs, "biz", "", "comma-separated `BIZ` names to sync (required)")
	fs.StringVar(&cfg.platform, "platform", "", "`PLATFORM` reported for filters: ios, android, harmony, web ... (default \"unknown\")")
	fs.StringVar(&cfg.appVersion, "app-version", "", "dotted numeric app `VERSION` reported for filters, e.g. 5.12.1 (default: none)")
	fs.StringVar(&cfg.state, "state", "", "`FILE` keeping sync points across runs (default: in memory, so the server's points are used on the next run)")
	var rooms string
	fs.StringVar(&rooms, "room", "", "comma-separated `ROOM` names to join for non-persistent pushes")
	fs.BoolVar(&cfg.verbose, "verbose", false, "also log the SDK's own diagnostics (debug level); by default only connection events are logged")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for _, r := range strings.Split(rooms, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.rooms = append(cfg.rooms, r)
		}
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("client: unexpected argument %q (see --help)", fs.Arg(0))
	}
	for _, b := range strings.Split(bizs, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.bizs = append(cfg.bizs, b)
		}
	}
	var missing []string
	if cfg.token == "" {
		missing = append(missing, "--token")
	}
	if cfg.device == "" {
		missing = append(missing, "--device")
	}
	if len(cfg.bizs) == 0 {
		missing = append(missing, "--biz")
	}
	if len(missing) > 0 {
		return cfg, fmt.Errorf("client: %s required (see --help)", strings.Join(missing, ", "))
	}
	return cfg, nil
}

// oplogLine is the JSON shape printed per oplog. Exactly one of Payload and
// PayloadBase64 is set.
type oplogLine struct {
	Biz           string  `json:"biz"`
	Channel       string  `json:"channel"`
	ID            uint64  `json:"id"`
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 *string `json:"payload_base64,omitempty"`
}

// formatOplogLine renders op as one JSON line, newline included.
func formatOplogLine(op client.Oplog) ([]byte, error) {
	l := oplogLine{Biz: op.Biz, Channel: op.Channel, ID: op.ID}
	if utf8.Valid(op.Payload) {
		s := string(op.Payload)
		l.Payload = &s
	} else {
		s := base64.StdEncoding.EncodeToString(op.Payload)
		l.PayloadBase64 = &s
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("client: encode oplog %d: %w", op.ID, err)
	}
	return append(b, '\n'), nil
}

// lineWriter serializes lines from the handlers of different channels.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) handle(_ context.Context, op client.Oplog) error {
	b, err := formatOplogLine(op)
	if err != nil {
		return err
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	// A failed write returns the error, so the oplog is not acknowledged
	// and comes back on the next run.
	if _, err := lw.w.Write(b); err != nil {
		return fmt.Errorf("client: write stdout: %w", err)
	}
	return nil
}

// fatalEvent says whether e ends the command: the SDK stopped (4xxx), or
// the server wants a new token and ours is fixed.
func fatalEvent(e client.Event) error {
	switch e.Kind {
	case client.EventStopped:
		return fmt.Errorf("client: server refused the session (code %d): %w", e.Code, e.Err)
	case client.EventDisconnected:
		var we *protocol.WireError
		if errors.As(e.Err, &we) && we.Code.NeedsToken() {
			return fmt.Errorf("client: token rejected (code %d), mint a new one with `msync token`: %w", we.Code, e.Err)
		}
	}
	return nil
}

func logEvent(log *slog.Logger, e client.Event) {
	switch e.Kind {
	case client.EventConnected:
		log.Info("connected", "user", e.User, "session", e.Session)
	case client.EventDisconnected:
		log.Warn("disconnected", "err", e.Err, "retry_in", e.RetryIn)
	case client.EventKicked:
		log.Warn("kicked", "code", uint32(e.Code), "reason", e.Reason)
	case client.EventSkipped:
		log.Warn("server skipped older oplogs by backlog policy", "channel", e.Channel, "count", e.Count)
	case client.EventAuthRejected:
		for _, r := range e.Rejected {
			log.Error("biz rejected by the server", "biz", r.Biz, "reason", r.Reason)
		}
	case client.EventStopped:
		log.Error("stopped", "code", uint32(e.Code), "err", e.Err)
	case client.EventStoreError:
		log.Error("saving sync point failed", "channel", e.Channel, "err", e.Err)
	}
}

// runClient is `msync client`: see clientUsage. It returns nil when ctx is
// cancelled (SIGINT/SIGTERM in the dispatcher) or after --help.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseClientFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// The SDK logs what the events below report too; its own lines are
	// only worth the noise when debugging.
	sdkLog := slog.New(slog.DiscardHandler)
	if cfg.verbose {
		sdkLog = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("from", "sdk")
	}
	var store client.SyncPointStore
	if cfg.state != "" {
		fs, err := client.NewFileStore(cfg.state)
		if err != nil {
			return err
		}
		store = fs
	}
	var tlsCfg *tls.Config
	if cfg.tlsCA != "" {
		pem, err := os.ReadFile(cfg.tlsCA)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-ca %s: no PEM certificate in it", cfg.tlsCA)
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	fatal := make(chan error, 1)
	lw := &lineWriter{w: stdout}
	c, err := client.New(cfg.addr, client.Options{
		TLSConfig:     tlsCfg,
		TokenProvider: func(context.Context) (string, error) { return cfg.token, nil },
		Device:        cfg.device,
		Platform:      cfg.platform,
		AppVersion:    cfg.appVersion,
		Store:         store,
		Logger:        sdkLog,
		OnPush:        lw.push,
		OnEvent: func(e client.Event) {
			logEvent(log, e)
			if err := fatalEvent(e); err != nil {
				select {
				case fatal <- err:
				default:
				}
			}
		},
	})
	if err != nil {
		return err
	}
	for _, r := range cfg.rooms {
		if err := c.JoinRoom(r); err != nil {
			return err
		}
	}
	for _, b := range cfg.bizs {
		if err := c.RegisterBiz(b, lw.handle); err != nil {
			return err
		}
	}
	if err := c.Start(); err != nil {
		return err
	}
	log.Info("connecting", "addr", cfg.addr, "device", cfg.device, "bizs", cfg.bizs, "state", cfg.state)
	select {
	case <-ctx.Done():
		err = nil
	case err = <-fatal:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := c.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	return err
}
