// Package config is the msync configuration file: its schema, defaults and
// validation. cmd/msync maps a File onto each tier's Config; tiers never read
// files or globals themselves.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/biz"
)

// ErrInvalid wraps every validation problem.
var ErrInvalid = errors.New("config: invalid")

// DevAPIKey is the development key shipped in configs/msync.yaml; using it is
// logged as a warning.
const DevAPIKey = "dev-key"

// File is the whole configuration file. Zero values take the defaults named
// on each field.
type File struct {
	// Secret signs client tokens (HS256); at least 16 bytes.
	Secret string `yaml:"secret"`
	Log    Log    `yaml:"log"`
	// Pprof, when set (e.g. "127.0.0.1:6060"), serves net/http/pprof there.
	Pprof   string        `yaml:"pprof"`
	APIKeys []auth.APIKey `yaml:"api_keys"`
	Comet   Comet         `yaml:"comet"`
	Logic   Logic         `yaml:"logic"`
	Job     Job           `yaml:"job"`
	Store   Store         `yaml:"store"`
	Queue   Queue         `yaml:"queue"`
	Bizs    []biz.Spec    `yaml:"bizs"`
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (zero), warn, error
	Format string `yaml:"format"` // text (zero) or json
}

// Comet configures the connection tier.
type Comet struct {
	ID              string   `yaml:"id"`                // zero "comet-1"
	Addr            string   `yaml:"addr"`              // TCP listener; zero ":3101"
	HTTPAddr        string   `yaml:"http_addr"`         // /healthz and /metrics of a standalone comet; zero: none
	Heartbeat       Duration `yaml:"heartbeat"`         // interval told to clients; zero 30s
	AckTimeout      Duration `yaml:"ack_timeout"`       // unacked backlog page; zero 30s
	AuthTimeout     Duration `yaml:"auth_timeout"`      // AUTH must arrive within; zero 10s
	PageLimit       int      `yaml:"page_limit"`        // oplogs per page; zero 200
	WriteQueueBytes int      `yaml:"write_queue_bytes"` // per connection; zero 1 MiB
	Buckets         int      `yaml:"buckets"`           // session shards; zero 64
}

// Logic configures the API tier.
type Logic struct {
	HTTPAddr string `yaml:"http_addr"` // business HTTP API; zero ":3111"
	MaxBatch int    `yaml:"max_batch"` // items per /v1/sync/batch; zero 500
}

// Job configures the push tier.
type Job struct {
	Workers int `yaml:"workers"` // concurrent pushes to comets; zero 256
}

// Store selects the oplog store.
type Store struct {
	Backend string `yaml:"backend"` // pebble (zero)
	Dir     string `yaml:"dir"`     // pebble directory; zero "./data"
}

// Queue selects the push stream.
type Queue struct {
	Backend string `yaml:"backend"` // memory (zero)
}

// Duration is a time.Duration written like "30s", "12h" or "7d".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := biz.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes data strictly (unknown keys are errors), fills defaults and
// validates, listing every problem at once.
func Parse(data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	f.defaults()
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *File) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&f.Log.Level, "info")
	def(&f.Log.Format, "text")
	def(&f.Comet.ID, "comet-1")
	def(&f.Comet.Addr, ":3101")
	def(&f.Logic.HTTPAddr, ":3111")
	def(&f.Store.Backend, "pebble")
	def(&f.Store.Dir, "./data")
	def(&f.Queue.Backend, "memory")
}

// Validate lists every problem of f at once.
func (f *File) Validate() error {
	var errs []error
	if len(f.Secret) < 16 {
		errs = append(errs, errors.New("secret: must be at least 16 bytes"))
	}
	if _, err := f.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	if f.Log.Format != "text" && f.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", f.Log.Format))
	}
	if len(f.APIKeys) == 0 {
		errs = append(errs, errors.New("api_keys: at least one key is needed to publish"))
	}
	for i, k := range f.APIKeys {
		if k.Key == "" || len(k.Bizs) == 0 {
			errs = append(errs, fmt.Errorf("api_keys[%d]: needs key and bizs", i))
		}
	}
	if f.Store.Backend != "pebble" {
		errs = append(errs, fmt.Errorf("store.backend %q: want pebble", f.Store.Backend))
	}
	if f.Queue.Backend != "memory" {
		errs = append(errs, fmt.Errorf("queue.backend %q: want memory", f.Queue.Backend))
	}
	for name, v := range map[string]int{"comet.page_limit": f.Comet.PageLimit, "comet.write_queue_bytes": f.Comet.WriteQueueBytes,
		"comet.buckets": f.Comet.Buckets, "logic.max_batch": f.Logic.MaxBatch, "job.workers": f.Job.Workers} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", name))
		}
	}
	if _, err := biz.NewRegistry(f.Bizs); err != nil {
		errs = append(errs, err)
	}
	if len(f.Bizs) == 0 {
		errs = append(errs, errors.New("bizs: at least one biz is needed"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// SlogLevel parses Log.Level.
func (f *File) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.Log.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", f.Log.Level)
	}
	return l, nil
}

// HasDevKey reports whether the development API key is configured.
func (f *File) HasDevKey() bool {
	for _, k := range f.APIKeys {
		if k.Key == DevAPIKey {
			return true
		}
	}
	return false
}
