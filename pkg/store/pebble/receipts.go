package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

var (
	_ store.Receipts = (*Store)(nil)
	_ store.AckFeed  = (*Store)(nil)
)

// A raised sync point is written three times in one batch: the device's
// point (p), the channel's receipt (q: who acked what, for
// ChannelReceipts) and one ack feed entry (a) keyed by biz and acked-at
// time, whose older entry for the same point is deleted. Acked-at times
// are strictly increasing unix nanoseconds (never before the last one, also
// across restarts through the k key), so feed order is commit order and a
// consumer's cursor never has a later save sort before it.

func receiptPrefix(ch string) []byte { return appendName([]byte{kindReceipt}, ch) }

func receiptKey(ch, device string) []byte { return append(receiptPrefix(ch), device...) }

func ackFeedPrefix(biz string) []byte { return appendName([]byte{kindAckFeed}, biz) }

// ackFeedPos is an entry's position inside its biz's feed: the cursor.
func ackFeedPos(ackedNs uint64, ch, device string) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+2+len(ch)+len(device)), ackedNs)
	return append(appendName(b, ch), device...)
}

func parseAckFeedPos(pos []byte) (ackedNs uint64, ch, device string, err error) {
	if len(pos) < 8+2 {
		return 0, "", "", fmt.Errorf("bad ack feed position %x", pos)
	}
	n := int(binary.BigEndian.Uint16(pos[8:]))
	if len(pos) < 10+n {
		return 0, "", "", fmt.Errorf("bad ack feed position %x", pos)
	}
	return binary.BigEndian.Uint64(pos), string(pos[10 : 10+n]), string(pos[10+n:]), nil
}

func cursorKey(name string) []byte { return append([]byte{kindCursor}, name...) }

// ackClock hands out one SaveSyncPoints call's acked-at times.
type ackClock struct{ last uint64 }

func (c *ackClock) next() uint64 {
	c.last = max(c.last+1, uint64(time.Now().UnixNano()))
	return c.last
}

// newAckClock starts from the last time handed out. REQUIRES: s.syncMu.
func (s *Store) newAckClock() (*ackClock, error) {
	if s.lastAck == 0 {
		v, _, err := s.getUint64([]byte{kindLastAck})
		if err != nil {
			return nil, err
		}
		s.lastAck = v
	}
	return &ackClock{last: s.lastAck}, nil
}

// setReceiptLocked adds to b the receipt of a raised point and moves its
// ack feed entry. REQUIRES: s.syncMu.
func (s *Store) setReceiptLocked(b *pebbledb.Batch, device, ch string, id, ackedNs uint64) error {
	rk := receiptKey(ch, device)
	name, _, _, err := oplog.ParseChannel(ch)
	if err != nil { // checked by the caller
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	fp := ackFeedPrefix(name)
	old, closer, err := s.db.Get(rk)
	switch {
	case err == nil:
		if len(old) == 16 {
			oldNs := binary.BigEndian.Uint64(old[8:])
			if derr := b.Delete(append(fp, ackFeedPos(oldNs, ch, device)...), nil); derr != nil {
				closer.Close()
				return fmt.Errorf("%w: ack feed: %w", store.ErrUnavailable, derr)
			}
		}
		closer.Close()
	case !errors.Is(err, pebbledb.ErrNotFound):
		return fmt.Errorf("%w: get receipt: %w", store.ErrUnavailable, err)
	}
	v := binary.BigEndian.AppendUint64(encodeUint64(id), ackedNs)
	if err := b.Set(rk, v, nil); err != nil {
		return fmt.Errorf("%w: receipt: %w", store.ErrUnavailable, err)
	}
	if err := b.Set(append(fp, ackFeedPos(ackedNs, ch, device)...), encodeUint64(id), nil); err != nil {
		return fmt.Errorf("%w: ack feed: %w", store.ErrUnavailable, err)
	}
	return nil
}

// ChannelReceipts implements store.Receipts.
func (s *Store) ChannelReceipts(ctx context.Context, ch, after string, limit int) ([]store.Receipt, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := s.rlock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	prefix := receiptPrefix(ch)
	lower := prefix
	if after != "" {
		lower = append(receiptKey(ch, after), 0) // the first key after it
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("%w: receipts: %w", store.ErrUnavailable, err)
	}
	var out []store.Receipt
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break
		}
		if len(v) != 16 {
			key := string(it.Key())
			it.Close()
			return nil, fmt.Errorf("%w: receipt %q: value of %d bytes", store.ErrUnavailable, key, len(v))
		}
		out = append(out, store.Receipt{Device: string(it.Key()[len(prefix):]), Channel: ch,
			ID: binary.BigEndian.Uint64(v), AckedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[8:])))})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("%w: receipts: %w", store.ErrUnavailable, err)
	}
	return out, nil
}

// AcksAfter implements store.AckFeed.
func (s *Store) AcksAfter(ctx context.Context, biz string, after store.AckCursor, limit int) ([]store.Receipt, store.AckCursor, error) {
	if err := oplog.ValidBizName(biz); err != nil {
		return nil, after, fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	if limit <= 0 {
		return nil, after, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if len(after) > 0 {
		if _, _, _, err := parseAckFeedPos(after); err != nil {
			return nil, after, fmt.Errorf("%w: cursor: %w", store.ErrInvalid, err)
		}
	}
	if err := s.rlock(ctx); err != nil {
		return nil, after, err
	}
	defer s.mu.RUnlock()
	prefix := ackFeedPrefix(biz)
	lower := prefix
	if len(after) > 0 {
		lower = append(append(append([]byte(nil), prefix...), after...), 0)
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, after, fmt.Errorf("%w: ack feed: %w", store.ErrUnavailable, err)
	}
	var out []store.Receipt
	next := after
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break
		}
		pos := it.Key()[len(prefix):]
		ns, ch, dev, perr := parseAckFeedPos(pos)
		id, derr := decodeUint64(v)
		if err := errors.Join(perr, derr); err != nil {
			it.Close()
			return nil, after, fmt.Errorf("%w: ack feed: %w", store.ErrUnavailable, err)
		}
		out = append(out, store.Receipt{Device: dev, Channel: ch, ID: id, AckedAt: time.Unix(0, int64(ns))})
		next = append(store.AckCursor(nil), pos...)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, after, fmt.Errorf("%w: ack feed: %w", store.ErrUnavailable, err)
	}
	return out, next, nil
}

// SaveAckCursor implements store.AckFeed (fsync'd: a cursor that went back
// after a crash would only resend, but one is cheap).
func (s *Store) SaveAckCursor(ctx context.Context, name string, c store.AckCursor) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: cursor name %q", store.ErrInvalid, name)
	}
	if err := s.rlock(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := s.db.Set(cursorKey(name), c, pebbledb.Sync); err != nil {
		return fmt.Errorf("%w: save cursor: %w", store.ErrUnavailable, err)
	}
	return nil
}

// LoadAckCursor implements store.AckFeed.
func (s *Store) LoadAckCursor(ctx context.Context, name string) (store.AckCursor, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("%w: cursor name %q", store.ErrInvalid, name)
	}
	if err := s.rlock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(cursorKey(name))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: load cursor: %w", store.ErrUnavailable, err)
	}
	defer closer.Close()
	if len(v) == 0 {
		return nil, nil
	}
	return append(store.AckCursor(nil), v...), nil
}
