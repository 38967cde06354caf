package rocketmq

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msync/msync/pkg/config"
)

// TestConfigFileRocketMQ checks the queue.rocketmq block of the config file
// (pkg/config) and that its values make a valid Config here.
func TestConfigFileRocketMQ(t *testing.T) {
	const base = `
secret: "0123456789abcdef0123"
dev: true # short test keys
api_keys: [{key: k, bizs: ["*"]}]
bizs: [{name: demo, target: user}]
`
	f, err := config.Parse([]byte(base + `
queue:
  backend: rocketmq
  rocketmq:
    name_servers: ["10.0.0.1:9876", "10.0.0.2:9876"]
    send_timeout: 2s
    retries: -1
    queues: 4
    consume_from: first
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	r := f.Queue.RocketMQ
	if r.Topic != "msync_push" || r.Group != "msync_job" {
		t.Fatalf("defaults: topic %q group %q", r.Topic, r.Group)
	}
	cfg := Config{NameServers: r.NameServers, Topic: r.Topic, Group: r.Group, Instance: r.Instance,
		SendTimeout: time.Duration(r.SendTimeout), Retries: r.Retries, Queues: r.Queues, MaxBatch: r.MaxBatch, ConsumeFrom: r.ConsumeFrom}
	if _, err := NewConsumer(cfg); err != nil {
		t.Fatalf("a valid file's values rejected by NewConsumer: %v", err)
	}

	_, err = config.Parse([]byte(base + `
queue:
  backend: rocketmq
  rocketmq:
    name_servers: ["nohost"]
    retries: 99
    consume_from: middle
`))
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Parse(bad) = %v, want ErrInvalid", err)
	}
	for _, want := range []string{`"nohost": want host:port`, "retries 99", `consume_from "middle"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not list %q", err, want)
		}
	}
	if _, err := config.Parse([]byte(base + "queue: {backend: rocketmq}\n")); err == nil || !strings.Contains(err.Error(), "name_servers") {
		t.Fatalf("rocketmq without name servers = %v", err)
	}
	if _, err := config.Parse([]byte(base + "queue: {backend: kafka}\n")); err == nil || !strings.Contains(err.Error(), "want memory or rocketmq") {
		t.Fatalf("unknown backend = %v", err)
	}
}
