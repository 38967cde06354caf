package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/msync/msync/pkg/rpc"
)

const certsUsage = `Usage: msync certs [--dir DIR] [--comets IDS] [--hosts HOSTS]

Writes a development CA and tier certificates for mutual TLS between the
tiers of a cluster (rpc_tls in the config; docs/cluster.md, "Security
between tiers"): ca.crt and ca.key, logic.crt (roles logic and job: job runs
inside logic in the mixed local layout), job.crt, and <id>.crt for each
comet id, each with its .key (mode 0600). Each certificate names its role
(and comet id) in a URI SAN, spiffe://msync/<role>[/<id>], and is valid for
the hosts given. It refuses to overwrite a folder that already holds a CA.

For production, issue certificates from your own CA with the same URI SANs.

Example (what scripts/cluster.sh runs when the folder is missing):
  msync certs --dir ./certs-dev --comets comet-1,comet-2,comet-3,comet-4
`

func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", certsUsage, stderr)
	dir := fs.String("dir", "./certs-dev", "folder to write (created 0700)")
	comets := fs.String("comets", "comet-1,comet-2,comet-3,comet-4", "comma-separated comet ids to issue certificates for")
	hosts := fs.String("hosts", strings.Join(rpc.DefaultHosts, ","), "comma-separated IPs and DNS names the certificates are valid for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("certs: unexpected arguments %v", fs.Args())
	}
	out, err := rpc.WriteDevCerts(*dir, split(*comets), split(*hosts))
	if err != nil {
		return err
	}
	for _, f := range out.Files {
		fmt.Fprintln(stdout, f)
	}
	return nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
