package cassandra

import (
	"context"
	"fmt"
	"strings"

	"github.com/gocql/gocql"

	"github.com/msync/msync/pkg/store"
)

// Schema returns the CQL statements Migrate runs, in order: the keyspace and
// every table, each idempotent (IF NOT EXISTS).
func Schema(cfg Config) ([]string, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	repl, _ := cfg.replicationCQL()
	ks := cfg.Keyspace
	return []string{
		fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", ks, repl),
		// One partition per (channel, id range); max_id is the partition's
		// highest assigned id, the compare-and-set target of every append.
		// It is written without TTL, so it outlives expired oplogs and ids
		// are never reused.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.oplogs (
	channel text, bucket bigint, id bigint,
	max_id bigint STATIC,
	op_uuid uuid, body blob,
	PRIMARY KEY ((channel, bucket), id)
) WITH CLUSTERING ORDER BY (id ASC)`, ks),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.dedup (
	channel text, dedup_key text,
	op_uuid uuid, from_id bigint, claimed_at timestamp, id bigint,
	PRIMARY KEY ((channel, dedup_key))
)`, ks),
		// Written with USING TIMESTAMP = id: last-write-wins then keeps the
		// highest id (see SaveSyncPoints).
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.sync_points (
	device text, channel text, id bigint,
	PRIMARY KEY (device, channel)
)`, ks),
		// The sync points by channel, for delivery receipts; written with
		// sync_points and with the same USING TIMESTAMP = id.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.receipts (
	channel text, device text, id bigint, acked_at timestamp,
	PRIMARY KEY (channel, device)
)`, ks),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.sessions (
	device text PRIMARY KEY,
	user_id text, platform text, app_version text, comet text, conn_key text, since timestamp
)`, ks),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.user_sessions (
	user_id text, device text,
	platform text, app_version text, comet text, conn_key text, since timestamp,
	PRIMARY KEY (user_id, device)
)`, ks),
		// Device owners: written only by LWT (ClaimDevice).
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.device_owners (
	device text PRIMARY KEY, user_id text
)`, ks),
		// Written with USING TIMESTAMP = the cut-off (µs): last-write-wins
		// keeps the latest (see SetTokensNotBefore).
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.token_cutoffs (
	user_id text PRIMARY KEY, not_before bigint
)`, ks),
		// One partition (shard 0) so listing comets is a single-partition read.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.comets (
	shard int, id text, addr text, seen timestamp,
	PRIMARY KEY (shard, id)
)`, ks),
	}, nil
}

// Migrate creates the keyspace and tables of cfg, skipping those that exist.
// Schema changes run at ALL-agreement speed: gocql waits for schema
// agreement after each statement.
func Migrate(ctx context.Context, cfg Config) error {
	stmts, err := Schema(cfg)
	if err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	cluster, err := newCluster(cfg)
	if err != nil {
		return err
	}
	// Schema statements may take longer than a data request.
	cluster.Timeout = max(cluster.Timeout, 30*1e9)
	sess, err := cluster.CreateSession()
	if err != nil {
		return fmt.Errorf("%w: connect: %w", store.ErrUnavailable, err)
	}
	defer sess.Close()
	for _, s := range stmts {
		if err := sess.Query(s).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			first, _, _ := strings.Cut(s, "(")
			return fmt.Errorf("store/cassandra: migrate: %s: %w", strings.TrimSpace(first), err)
		}
		cfg.Logger.Info("cassandra schema applied", "stmt", firstLine(s))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// stmts are the store's statements with the keyspace filled in.
type stmts struct {
	casAdvance, casInit, insertOp, selectHead, selectRange, selectUUIDs string
	dedupClaim, dedupGet, dedupSetID, dedupTakeover, dedupRelease       string
	saveSyncPoint, selectSyncPoints                                     string
	saveReceipt, selectReceipts                                         string
	ownerGet, ownerClaim, ownerHandOver, notBeforeSet, notBeforeGet     string
}

func newStmts(ks string) stmts {
	r := strings.NewReplacer("KS.", ks+".")
	s := stmts{
		casAdvance:       "UPDATE KS.oplogs SET max_id = ? WHERE channel = ? AND bucket = ? IF max_id = ?",
		casInit:          "UPDATE KS.oplogs SET max_id = ? WHERE channel = ? AND bucket = ? IF max_id = null",
		insertOp:         "INSERT INTO KS.oplogs (channel, bucket, id, op_uuid, body) VALUES (?, ?, ?, ?, ?) USING TTL ?",
		selectHead:       "SELECT max_id FROM KS.oplogs WHERE channel = ? AND bucket = ? LIMIT 1",
		selectRange:      "SELECT id, body FROM KS.oplogs WHERE channel = ? AND bucket = ? AND id > ? AND id <= ? LIMIT ?",
		selectUUIDs:      "SELECT id, op_uuid FROM KS.oplogs WHERE channel = ? AND bucket = ? AND id > ? AND id <= ?",
		dedupClaim:       "INSERT INTO KS.dedup (channel, dedup_key, op_uuid, from_id, claimed_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
		dedupGet:         "SELECT op_uuid, from_id, claimed_at, id FROM KS.dedup WHERE channel = ? AND dedup_key = ?",
		dedupSetID:       "UPDATE KS.dedup SET id = ? WHERE channel = ? AND dedup_key = ?",
		dedupTakeover:    "UPDATE KS.dedup SET op_uuid = ?, from_id = ?, claimed_at = ? WHERE channel = ? AND dedup_key = ? IF op_uuid = ?",
		dedupRelease:     "DELETE FROM KS.dedup WHERE channel = ? AND dedup_key = ? IF op_uuid = ?",
		saveSyncPoint:    "INSERT INTO KS.sync_points (device, channel, id) VALUES (?, ?, ?) USING TIMESTAMP ?",
		selectSyncPoints: "SELECT channel, id FROM KS.sync_points WHERE device = ?",
		saveReceipt:      "INSERT INTO KS.receipts (channel, device, id, acked_at) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
		selectReceipts:   "SELECT device, id, acked_at FROM KS.receipts WHERE channel = ? AND device > ? LIMIT ?",
		ownerGet:         "SELECT user_id FROM KS.device_owners WHERE device = ?",
		ownerClaim:       "INSERT INTO KS.device_owners (device, user_id) VALUES (?, ?) IF NOT EXISTS",
		ownerHandOver:    "UPDATE KS.device_owners SET user_id = ? WHERE device = ? IF user_id = ?",
		notBeforeSet:     "INSERT INTO KS.token_cutoffs (user_id, not_before) VALUES (?, ?) USING TIMESTAMP ?",
		notBeforeGet:     "SELECT not_before FROM KS.token_cutoffs WHERE user_id = ?",
	}
	for _, p := range []*string{&s.casAdvance, &s.casInit, &s.insertOp, &s.selectHead, &s.selectRange, &s.selectUUIDs,
		&s.dedupClaim, &s.dedupGet, &s.dedupSetID, &s.dedupTakeover, &s.dedupRelease, &s.saveSyncPoint, &s.selectSyncPoints,
		&s.saveReceipt, &s.selectReceipts,
		&s.ownerGet, &s.ownerClaim, &s.ownerHandOver, &s.notBeforeSet, &s.notBeforeGet} {
		*p = r.Replace(*p)
	}
	return s
}

// checkSchema makes a missing keyspace or table a configuration error at
// open, naming the setting, instead of an "unconfigured table" on the first
// write (which callers would take for an outage and retry).
func checkSchema(sess *gocql.Session, cfg Config, tables ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	have := make(map[string]bool)
	iter := sess.Query("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", cfg.Keyspace).
		WithContext(ctx).Iter()
	var name string
	for iter.Scan(&name) {
		have[name] = true
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("%w: read schema of keyspace %q: %w", store.ErrUnavailable, cfg.Keyspace, err)
	}
	if len(have) == 0 {
		return fmt.Errorf("%w: keyspace %q (store.cassandra.keyspace) does not exist on %v: create it with `msync migrate` and this config, or fix the setting",
			ErrInvalidConfig, cfg.Keyspace, cfg.Hosts)
	}
	var missing []string
	for _, t := range tables {
		if !have[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: keyspace %q (store.cassandra.keyspace) lacks tables %s: run `msync migrate` with this config",
			ErrInvalidConfig, cfg.Keyspace, strings.Join(missing, ", "))
	}
	return nil
}

// newCluster maps cfg (with defaults) onto a gocql cluster. No RetryPolicy
// is set: a retried LWT batch could allocate twice, and every other call is
// cheap for the caller to retry.
func newCluster(cfg Config) (*gocql.ClusterConfig, error) {
	cons, err := parseConsistency(cfg.Consistency)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	serial, err := parseSerial(cfg.SerialConsistency)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c := gocql.NewCluster(cfg.Hosts...)
	c.ProtoVersion = cfg.ProtoVersion
	c.Consistency = cons
	c.SerialConsistency = serial
	c.Timeout = cfg.Timeout
	c.ConnectTimeout = cfg.Timeout
	c.RetryPolicy = nil
	c.DisableInitialHostLookup = cfg.disableHostLookup
	return c, nil
}
