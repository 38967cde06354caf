package cassandra

import (
	"fmt"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/store"
)

// Conn is a session on the store's cluster for another package keeping its
// tables in the same keyspace (the cluster directory, pkg/directory/cassandra),
// so both share one config, one schema (Schema, `msync migrate`) and one way
// of connecting.
type Conn struct {
	Session     *gocql.Session
	Consistency gocql.Consistency
	Serial      gocql.SerialConsistency
	// Config is cfg with its defaults applied.
	Config Config
}

// Connect validates cfg, connects, and checks that the keyspace holds
// tables (ErrInvalidConfig naming the setting and `msync migrate` if not).
// The caller closes Session.
func Connect(cfg Config, tables ...string) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cluster, err := newCluster(cfg)
	if err != nil {
		return nil, err
	}
	sess, err := cluster.CreateSession()
	if err != nil {
		return nil, fmt.Errorf("%w: connect %v: %w", store.ErrUnavailable, cfg.Hosts, err)
	}
	if !cfg.disableHostLookup { // the scripted test server has no system_schema
		if err := checkSchema(sess, cfg, tables...); err != nil {
			sess.Close()
			return nil, err
		}
	}
	return &Conn{Session: sess, Consistency: cluster.Consistency, Serial: cluster.SerialConsistency, Config: cfg}, nil
}
