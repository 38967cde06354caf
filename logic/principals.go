package logic

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/auth"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

// Device binding modes (Config.DeviceBinding). A device id is chosen by the
// client, so it proves nothing by itself; without a binding any token could
// claim another user's device, read its device channels, move its server
// sync points and take over its directory entry (pushes, kicks, rooms).
const (
	// DeviceBindingOwner: the first user to connect a device owns it
	// (recorded durably by the store); another user's session for it is
	// refused with 2003 unless that user's token names the device in its dev
	// claim, which hands the device over (a shared tablet switching users:
	// the business mints the new user's token for that device at login).
	DeviceBindingOwner = "owner"
	// DeviceBindingToken: every token must name the device in its dev
	// claim; nothing is recorded.
	DeviceBindingToken = "token"
)

// DeviceOwners records which user owns a device id. The Pebble and the
// Cassandra stores implement it.
type DeviceOwners interface {
	// ClaimDevice makes user the owner of device if it has none, or if
	// takeover is set, and returns the owner after the call.
	ClaimDevice(ctx context.Context, device, user string, takeover bool) (owner string, err error)
}

// TokenRevocations keeps per-user token cut-offs: tokens issued before a
// user's cut-off are refused. The Pebble and the Cassandra stores implement it.
type TokenRevocations interface {
	// SetTokensNotBefore raises user's cut-off to t (never lowers it).
	SetTokensNotBefore(ctx context.Context, user string, t time.Time) error
	// TokensNotBefore returns user's cut-off, zero if none.
	TokensNotBefore(ctx context.Context, user string) (time.Time, error)
}

// checkPrincipal refuses a session whose token was revoked or whose device
// belongs to another user; it runs before anything keyed by the device is
// read or written.
func (l *Logic) checkPrincipal(ctx context.Context, log *slog.Logger, c auth.Claims, device string) (string, error) {
	if l.cfg.Revocations != nil {
		sctx, cancel := l.storeCtx(ctx)
		nb, err := l.cfg.Revocations.TokensNotBefore(sctx, c.User)
		cancel()
		if err != nil {
			log.Warn("connect: reading the token cut-off failed", "err", err)
			return "unavailable", api.Error(protocol.CodeUnavailable, "store unavailable")
		}
		// A token without iat cannot show it was issued after the cut-off.
		if !nb.IsZero() && (c.IssuedAt.IsZero() || c.IssuedAt.Before(nb)) {
			return "token_revoked", api.Error(protocol.CodeTokenRevoked, "the user's tokens issued before %s were revoked: fetch a new one", nb.UTC().Format(time.RFC3339))
		}
	}
	named := c.AllowsDevice(device)
	switch {
	case len(c.Devices) > 0 && !named:
		return "device_not_allowed", api.Error(protocol.CodeDeviceNotAllowed, "the token does not name device %q", device)
	case l.cfg.DeviceBinding == DeviceBindingToken && !named:
		return "device_not_allowed", api.Error(protocol.CodeDeviceNotAllowed, "the token must name device %q in its dev claim", device)
	case l.cfg.DeviceBinding == DeviceBindingOwner && l.cfg.Owners != nil:
		sctx, cancel := l.storeCtx(ctx)
		owner, err := l.cfg.Owners.ClaimDevice(sctx, device, c.User, named)
		cancel()
		if err != nil {
			log.Warn("connect: recording the device owner failed", "err", err)
			return "unavailable", api.Error(protocol.CodeUnavailable, "store unavailable")
		}
		if owner != c.User {
			l.log.Warn("connect refused: device belongs to another user", "device", device, "user", c.User)
			return "device_not_allowed", api.Error(protocol.CodeDeviceNotAllowed, "device %q belongs to another user: a token naming the device (dev claim) hands it over", device)
		}
	}
	return "", nil
}

type revokeReq struct {
	// Before is the cut-off (RFC 3339); zero means now: every token issued
	// up to this second is refused.
	Before string `json:"before"`
}

// handleRevokeTokens is POST /v1/users/{user}/revoke_tokens: tokens of the
// user issued before the cut-off no longer open sessions, and the user's
// online sessions are closed with 2004 so their SDKs fetch new tokens.
func (l *Logic) handleRevokeTokens(w http.ResponseWriter, r *http.Request) *apiError {
	var req revokeReq
	if aerr := l.adminRequest(w, r, &req); aerr != nil {
		return aerr
	}
	user := r.PathValue("user")
	if err := oplog.ValidID("user", user); err != nil {
		return badRequest("%v", err)
	}
	if l.cfg.Revocations == nil {
		return errorf(http.StatusNotImplemented, CodeNotSupported, "this store keeps no token cut-offs")
	}
	// The next whole second: a token carries iat in seconds, so one issued
	// earlier in this second is revoked too (a new one minted in this
	// second is refused for at most a second).
	cut := l.cfg.Now().Truncate(time.Second).Add(time.Second)
	if req.Before != "" {
		t, err := time.Parse(time.RFC3339Nano, req.Before)
		if err != nil {
			return badRequest("before: want RFC 3339 (2006-01-02T15:04:05Z): %v", err)
		}
		cut = t
	}
	ctx, cancel := l.storeCtx(r.Context())
	defer cancel()
	if err := l.cfg.Revocations.SetTokensNotBefore(ctx, user, cut); err != nil {
		return l.storeError("tokens_not_before", err)
	}
	nb, err := l.cfg.Revocations.TokensNotBefore(ctx, user)
	if err != nil {
		return l.storeError("tokens_not_before", err)
	}
	kicked := 0
	sessions, err := l.cfg.Directory.ByUser(ctx, user)
	if err != nil && !errors.Is(err, context.Canceled) {
		l.log.Warn("revoke: listing the user's sessions failed; they end at their next reconnect", "user", user, "err", err)
	}
	for i := range sessions {
		if sessions[i].Since.Before(nb) {
			l.kick(ctx, l.log, sessions[i].Device, &sessions[i], protocol.CodeTokenRevoked, "the user's tokens were revoked")
			kicked++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "not_before": nb.UTC().Format(time.RFC3339), "kicked": kicked})
	return nil
}
