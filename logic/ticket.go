package logic

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/rpc"
)

// A session ticket is what Connect signs and Sync, Ack and Renew check: a
// pb.Ticket naming the comet, connection key, user, device, client and
// channels of one session, with an expiry, followed by its HMAC-SHA256
// under Config.TicketKey. Without it, any caller of Logic could read or
// move the sync point of any user's channels by naming them in bare
// request fields; with it, a comet can only act for sessions that
// authenticated on it with a valid token.

const ticketMACLen = sha256.Size

var (
	errTicketMissing = errors.New("no session ticket")
	errTicketBad     = errors.New("session ticket does not verify")
	errTicketExpired = errors.New("session ticket expired")
	errTicketComet   = errors.New("session ticket belongs to another comet")
)

func (l *Logic) mac(body []byte) []byte {
	m := hmac.New(sha256.New, l.cfg.TicketKey)
	m.Write([]byte("msync session ticket v1\x00"))
	m.Write(body)
	return m.Sum(nil)
}

// signTicket encodes t with a fresh expiry and appends its MAC.
func (l *Logic) signTicket(t *pb.Ticket) ([]byte, error) {
	t.ExpiresMs = l.cfg.Now().Add(l.cfg.TicketTTL).UnixMilli()
	body, err := proto.Marshal(t)
	if err != nil {
		return nil, err
	}
	return append(body, l.mac(body)...), nil
}

// openTicket verifies raw and returns its content. With a verified peer
// (mutual TLS), the ticket must have been issued to that comet.
func (l *Logic) openTicket(ctx context.Context, raw []byte) (*pb.Ticket, error) {
	if len(raw) == 0 {
		return nil, errTicketMissing
	}
	if len(raw) <= ticketMACLen {
		return nil, errTicketBad
	}
	body, sum := raw[:len(raw)-ticketMACLen], raw[len(raw)-ticketMACLen:]
	if !hmac.Equal(sum, l.mac(body)) {
		return nil, errTicketBad
	}
	var t pb.Ticket
	if err := proto.Unmarshal(body, &t); err != nil {
		return nil, errTicketBad
	}
	if l.cfg.Now().UnixMilli() >= t.ExpiresMs {
		return nil, errTicketExpired
	}
	if id, ok := rpc.PeerIdentity(ctx); ok && id.Comet != t.Comet {
		return nil, errTicketComet
	}
	return &t, nil
}

// hasChannel reports whether the session was given ch at Connect.
func hasChannel(t *pb.Ticket, ch string) bool { return slices.Contains(t.Channels, ch) }

// stale reports whether t is past half its life, so Renew replaces it.
func (l *Logic) stale(t *pb.Ticket) bool {
	left := time.UnixMilli(t.ExpiresMs).Sub(l.cfg.Now())
	return left < l.cfg.TicketTTL/2
}
