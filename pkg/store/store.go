// Package store defines how msync keeps oplogs, sync points and dedup keys.
// Backends live in subpackages (pebble: embedded, the default; cassandra:
// production cluster) and all pass the conformance suite in storetest.
//
// Implementations are safe for concurrent use.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/msync/msync/pkg/oplog"
)

var (
	// ErrUnavailable: the backend cannot serve now (I/O failure, closed, timeout).
	// Nothing the failed call would have written is visible.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid: the request is malformed (no channel, id set by caller ...).
	ErrInvalid = errors.New("store: invalid request")
	// ErrInsufficientStorage: the backend refuses writes because its disk is
	// (nearly) full; nothing of the call was stored, and reads still work.
	// Errors carrying it also carry ErrUnavailable.
	ErrInsufficientStorage = errors.New("store: insufficient storage")
	// ErrOutcomeUnknown: the call gave up (its ctx ended) while its write was
	// in flight, so the ops may or may not be stored. Unlike ErrUnavailable
	// this does not mean "nothing was stored": a retry with the same dedup
	// keys returns the ids of those that were.
	ErrOutcomeUnknown = errors.New("store: outcome unknown")
)

// LateAppend is implemented by an Append error wrapping ErrOutcomeUnknown
// when the backend can still tell the write's outcome: Wait blocks until it
// is known (or ctx ends) and returns what Append would have returned.
type LateAppend interface {
	error
	Wait(ctx context.Context) ([]AppendResult, error)
}

// AppendResult is the outcome of one appended oplog.
type AppendResult struct {
	ID uint64
	// Duplicate: the channel already held an oplog with this dedup key; ID is
	// that oplog's id and nothing was written.
	Duplicate bool
}

// Appender assigns ids and stores oplogs.
type Appender interface {
	// Append stores ops durably (embedded: fsync'd; Cassandra: at the
	// configured consistency) and assigns each its id, setting op.Id.
	//
	// Per channel, ids are dense and strictly increasing from 1, assigned in
	// the order of ops within one call and in the order calls are serialised
	// between calls. Id assignment and the write are one atomic step per
	// channel, so no reader ever sees id n+1 before n is durable (no holes)
	// and an id is never handed out twice, also across restarts.
	//
	// An op with a DedupKey already used in its channel is not stored: its
	// result has the first oplog's id and Duplicate set. Two ops with the same
	// dedup key in one call store the first only.
	//
	// It returns one result per op, in order, or an error and no results; on
	// error nothing of the call is visible, except that a retry with the same
	// dedup keys returns the ids of those that were stored.
	Append(ctx context.Context, ops []*oplog.Oplog) ([]AppendResult, error)
}

// Reader reads channels.
type Reader interface {
	// Read returns up to limit oplogs of channel with id > after, ascending,
	// never beyond the durable watermark, and the channel's durable max id.
	// Ids deleted by expiry are absent: a caller that gets fewer than limit
	// oplogs has seen everything up to maxID.
	Read(ctx context.Context, channel string, after uint64, limit int) (ops []*oplog.Oplog, maxID uint64, err error)
	// MaxID returns the channel's durable max id (0 for an empty channel).
	MaxID(ctx context.Context, channel string) (uint64, error)
}

// SyncPoint is a device's acknowledged position in a channel.
type SyncPoint struct {
	Device  string
	Channel string
	ID      uint64
}

// SyncPoints keeps per-device, per-channel sync points.
type SyncPoints interface {
	// SaveSyncPoints raises stored points to the given ids; a lower id than
	// the stored one is ignored (points never go back). Not necessarily
	// fsync'd: the SDK keeps its own points, the server's are a fallback.
	SaveSyncPoints(ctx context.Context, points []SyncPoint) error
	// SyncPoints returns every stored point of device, by channel.
	SyncPoints(ctx context.Context, device string) (map[string]uint64, error)
}

// Receipt is a device's sync point in a channel and when the store last
// raised it: the device has acknowledged every oplog of Channel up to ID.
type Receipt struct {
	Device  string
	Channel string
	ID      uint64
	// AckedAt is the store's clock when SaveSyncPoints last raised the point.
	AckedAt time.Time
}

// Receipts reads sync points by channel, for delivery receipts.
type Receipts interface {
	// ChannelReceipts returns the points stored for channel (those saved by
	// SaveSyncPoints, with the time of their last raise), ordered by device,
	// for devices after `after` ("" = from the first), at most limit.
	ChannelReceipts(ctx context.Context, channel, after string, limit int) ([]Receipt, error)
}

// AckCursor is a position in an AckFeed, opaque to callers; nil is the start.
type AckCursor []byte

// AckFeed is a durable, ordered feed of raised sync points per biz (the biz
// of their channel), so a consumer such as a webhook sender can resume after
// a crash or an outage from a cursor it saved: nothing saved by
// SaveSyncPoints is missed. A point appears once, at its latest raise: a
// point raised again moves to the end of the feed with its new id, so the
// feed holds at most one entry per sync point.
type AckFeed interface {
	// AcksAfter returns up to limit entries of biz's feed after cursor,
	// oldest first, and the cursor of the last one (cursor itself when none).
	// Entries are appended in SaveSyncPoints' commit order, so a reader at
	// cursor c never misses a later save.
	AcksAfter(ctx context.Context, biz string, after AckCursor, limit int) ([]Receipt, AckCursor, error)
	// SaveAckCursor stores a consumer's cursor under name (durably).
	SaveAckCursor(ctx context.Context, name string, c AckCursor) error
	// LoadAckCursor returns the cursor saved under name, nil if none.
	LoadAckCursor(ctx context.Context, name string) (AckCursor, error)
}

// Expirer removes oplogs whose validity ended.
type Expirer interface {
	// DeleteExpired deletes up to limit oplogs with ValidUntilMs < before and
	// returns how many it deleted. Max ids are kept, so ids are never reused.
	// Backends with native TTL may return 0 and do nothing.
	DeleteExpired(ctx context.Context, before time.Time, limit int) (int, error)
}

// Store is everything a logic tier needs.
type Store interface {
	Appender
	Reader
	SyncPoints
	Receipts
	Expirer
	// Close releases resources; calls after Close return ErrClosed.
	Close() error
}
