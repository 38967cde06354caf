package main

import (
	"context"
	"io"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errClusterMode
}
