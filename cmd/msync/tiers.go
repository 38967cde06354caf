package main

import (
	"context"
	"errors"
	"io"
)

// errClusterMode is returned until cluster mode lands (issue "Cluster mode").
var errClusterMode = errors.New("cluster mode is not built yet: use 'msync all'")

func runComet(ctx context.Context, args []string, stderr io.Writer) error { return errClusterMode }
func runLogic(ctx context.Context, args []string, stderr io.Writer) error { return errClusterMode }
func runJob(ctx context.Context, args []string, stderr io.Writer) error   { return errClusterMode }
