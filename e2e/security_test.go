package e2e

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// authRefused sends AUTH and waits for the ERROR with code and the close.
func (d *device) authRefused(token, id string, code protocol.Code, bizs ...string) {
	d.t.Helper()
	d.sendMsg(protocol.OpAuth, &pb.Auth{Token: token, Device: id, Platform: "ios", AppVersion: "1.0.0", Bizs: bizs})
	d.expectError(code, 5*time.Second)
}

// Security review #2: a device id is chosen by the client, so another user's
// token claiming it must be refused before anything keyed by the device is
// read or written: its device-channel backlog, its server sync point, its
// directory entry (which would kick it with 1006 and take over its pushes).
func TestDeviceOfAnotherUserIsRefused(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	bob := dial(t, n)
	bob.auth(n.token(t, "bob"), "bob-tablet", "cmd", "demo")
	n.publish(t, map[string]any{"biz": "cmd", "device": "bob-tablet", "payload": "secret-for-bob"})
	bob.waitGot(1, 5*time.Second)
	n.serverPoint(t, "bob-tablet", "cmd/d/bob-tablet", 1)
	bob.close()
	n.publish(t, map[string]any{"biz": "cmd", "device": "bob-tablet", "payload": "second-secret"})

	// Mallory, with a valid token of her own, claims bob-tablet: refused,
	// nothing sent, Bob's point unchanged.
	mal := dial(t, n)
	mal.authRefused(n.token(t, "mallory"), "bob-tablet", protocol.CodeDeviceNotAllowed, "cmd", "demo")
	if got := mal.received(); len(got) != 0 {
		t.Fatalf("mallory got %v", got)
	}
	if pts, err := n.Store.SyncPoints(t.Context(), "bob-tablet"); err != nil || pts["cmd/d/bob-tablet"] != 1 {
		t.Fatalf("bob's points %v, %v", pts, err)
	}

	// Alice online: Mallory's claim of her device does not kick her, and a
	// push to Alice's device still reaches Alice.
	alice := dial(t, n)
	alice.auth(n.token(t, "alice"), "alice-phone", "demo")
	mal = dial(t, n)
	mal.authRefused(n.token(t, "mallory"), "alice-phone", protocol.CodeDeviceNotAllowed, "demo")
	n.push(t, map[string]any{"device": "alice-phone", "payload": "for alice"})
	eventually(t, 5*time.Second, "alice's push", func() bool { return slices.Contains(alice.pushes(), "|for alice") })
	alice.mu.Lock()
	kicks := len(alice.kicks)
	alice.mu.Unlock()
	if kicks != 0 {
		t.Fatalf("alice was kicked %d times", kicks)
	}

	// A token whose dev claim names other devices is refused for this one,
	// even for the owner.
	mal = dial(t, n)
	mal.authRefused(n.deviceToken(t, "bob", "bob-phone"), "bob-tablet", protocol.CodeDeviceNotAllowed, "cmd")

	// Bob comes back on his tablet and gets what he missed, in order.
	bob = bob.reconnect(n)
	bob.auth(n.token(t, "bob"), "bob-tablet", "cmd", "demo")
	bob.waitGot(1, 5*time.Second)
	checkInOrder(t, bob, "cmd/d/bob-tablet", 2, 2, func(uint64) string { return "second-secret" })

	// Handing the tablet over: the business mints carol's token for it.
	carol := bob.reconnect(n)
	carol.auth(n.deviceToken(t, "carol", "bob-tablet"), "bob-tablet", "demo")
	// ... after which bob's plain token is refused there.
	bob = dial(t, n)
	bob.authRefused(n.token(t, "bob"), "bob-tablet", protocol.CodeDeviceNotAllowed, "demo")
}

// Security review #13: tokens of a user issued before a cut-off set through
// POST /v1/users/{user}/revoke_tokens open no session (2004), the user's
// online sessions are closed, and a token minted afterwards works. The
// cut-off is stored with the data, so it survives a restart.
func TestRevokedTokensAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startNode(t, dir)
	old := n.token(t, "rita")
	d := dial(t, n)
	d.auth(old, "rita-phone", "demo")

	var out map[string]any
	if code := call(t, "POST", n.api()+"/v1/users/rita/revoke_tokens", "demo-only", map[string]any{}, &out); code != http.StatusForbidden {
		t.Fatalf("revoke with a one-biz key: %d %v", code, out)
	}
	if code := call(t, "POST", n.api()+"/v1/users/rita/revoke_tokens", "test-key", map[string]any{}, &out); code != http.StatusOK || out["kicked"] != 1.0 {
		t.Fatalf("revoke: %d %v", code, out)
	}
	eventually(t, 5*time.Second, "rita's session kicked", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.kicks) > 0 && protocol.Code(d.kicks[0].Code) == protocol.CodeTokenRevoked
	})
	d = d.reconnect(n)
	d.authRefused(old, "rita-phone", protocol.CodeTokenRevoked, "demo")

	n.stop(t)
	n = startNode(t, dir)
	d = dial(t, n)
	d.authRefused(old, "rita-phone", protocol.CodeTokenRevoked, "demo")
	// A token issued after the cut-off (the next whole second) works.
	eventually(t, 5*time.Second, "a fresh token accepted", func() bool {
		d = dial(t, n)
		d.sendMsg(protocol.OpAuth, &pb.Auth{Token: n.token(t, "rita"), Device: "rita-phone", Platform: "ios", AppVersion: "1.0.0", Bizs: []string{"demo"}})
		select {
		case <-d.done:
			return false
		case <-time.After(200 * time.Millisecond):
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.errs) == 0
	})
	d.expect(protocol.OpAuthReply, 5*time.Second)
}

// Security review #6: with the default config no room is open to ROOM_JOIN
// (ERROR 4007), so a client cannot listen to a business's room pushes.
func TestClientRoomJoinRefusedByDefault(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	mal := dial(t, n)
	mal.auth(n.token(t, "mallory"), "mal-phone", "demo")
	mal.sendMsg(protocol.OpRoomJoin, &pb.Room{Room: "board-private"})
	mal.expectError(protocol.CodeRoomForbidden, 5*time.Second)
}
