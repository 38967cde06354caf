package main

import (
	"context"
	"fmt"
	"io"

	"github.com/msync/msync/internal/cluster"
	"github.com/msync/msync/pkg/store/cassandra"
)

const migrateUsage = `Usage: msync migrate -c FILE [--print]

Creates the Cassandra keyspace and tables named by store.cassandra of FILE
(hosts, keyspace, replication), skipping those that exist. --print only
prints the CQL.
`

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", migrateUsage, stderr)
	cfgPath := fs.String("c", "configs/cluster-cassandra.yaml", "config file")
	printOnly := fs.Bool("print", false, "print the schema CQL and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, log, err := loadTier(*cfgPath, stderr)
	if err != nil {
		return err
	}
	cfg := cluster.CassandraConfig(f.Store.Cassandra)
	cfg.Logger = log
	if *printOnly {
		stmts, err := cassandra.Schema(cfg)
		if err != nil {
			return err
		}
		for _, s := range stmts {
			fmt.Fprintf(stdout, "%s;\n\n", s)
		}
		return nil
	}
	if err := cassandra.Migrate(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema of keyspace %s is in place on %v\n", f.Store.Cassandra.Keyspace, f.Store.Cassandra.Hosts)
	return nil
}
