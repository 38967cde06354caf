package main

import (
	"fmt"
	"io"
	"time"

	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/config"
)

const tokenUsage = `Usage: msync token --user U [--device D] [--ttl D] [-c FILE]

Prints a client token for user U, signed with the secret of the config file.
Businesses mint tokens themselves in production (HS256 JWT, subject = user id,
exp required, aud "msync" when set, at most auth.max_token_lifetime long, an
optional "dev" claim naming the devices it may connect as); this command is for
development and tests.

Example:
  msync token --user alice --ttl 24h -c configs/msync.yaml
`

func runToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", tokenUsage, stderr)
	user := fs.String("user", "", "user id the token is for (required)")
	device := fs.String("device", "", "device id the token may connect as (its dev claim); hands a device over to the user")
	ttl := fs.String("ttl", "24h", "validity, e.g. 90m, 24h, 7d")
	cfgPath := fs.String("c", "configs/msync.yaml", "config file whose secret signs the token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		fs.Usage()
		return fmt.Errorf("token: --user is required")
	}
	d, err := biz.ParseDuration(*ttl)
	if err != nil || d <= 0 {
		return fmt.Errorf("token: --ttl %q: want a positive duration like 24h or 7d", *ttl)
	}
	f, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	tokens, err := f.Tokens()
	if err != nil {
		return err
	}
	var devices []string
	if *device != "" {
		devices = []string{*device}
	}
	tok, err := tokens.Sign(*user, time.Duration(d), devices...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
