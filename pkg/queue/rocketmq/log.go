package rocketmq

import (
	"context"
	"log/slog"
	"sort"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// SetClientLogger routes rocketmq-client-go's own logs (a process-wide
// setting of the client, rlog) to log, at warn level and above: at info the
// client logs every rebalance and heartbeat. By default the client logs at
// info to stdout. Fatal lines are logged as errors; nothing exits.
func SetClientLogger(log *slog.Logger) {
	rlog.SetLogger(rlogAdapter{log: log})
}

type rlogAdapter struct{ log *slog.Logger }

func (a rlogAdapter) emit(level slog.Level, msg string, fields map[string]any) {
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys) // stable output
	args := make([]any, 0, 2+2*len(keys))
	args = append(args, "component", "rocketmq-client")
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	a.log.Log(context.Background(), level, msg, args...)
}

func (a rlogAdapter) Debug(string, map[string]any)              {}
func (a rlogAdapter) Info(string, map[string]any)               {}
func (a rlogAdapter) Warning(msg string, fields map[string]any) { a.emit(slog.LevelWarn, msg, fields) }
func (a rlogAdapter) Error(msg string, fields map[string]any)   { a.emit(slog.LevelError, msg, fields) }
func (a rlogAdapter) Fatal(msg string, fields map[string]any)   { a.emit(slog.LevelError, msg, fields) }
func (a rlogAdapter) Level(string)                              {}
func (a rlogAdapter) OutputPath(string) error                   { return nil }
