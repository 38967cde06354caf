package logic_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/msync/msync/pkg/api"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/biz"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
)

// FuzzConnect fuzzes the AUTH fields as logic's Connect sees them (token,
// device, platform, app version, bizs, points): a refusal carries a code a
// client can act on (never "a dependency failed": the store is healthy); an
// accepted session has valid fields, the token's user, one channel per
// known persistent biz it asked for, starting at the client's point, and
// every unknown biz listed as rejected.
func FuzzConnect(f *testing.F) {
	f.Add("alice", true, "dev1", "ios", "1.2.3", "chat,lock,nope", uint64(3))
	f.Add("bob", true, "", "android", "", "chat", uint64(0))
	f.Add("bob", true, "d", "", "1", "chat", uint64(0))
	f.Add("bob", true, "d", "IOS", "1..2", "chat,chat,ephemeral", uint64(1<<40))
	f.Add("bob", false, "d", "web", "1", "news", uint64(0))
	f.Add("u", true, "d\x00", "w", "4294967296", "", uint64(0))
	e := newFuzzEnv(f)
	n := 0
	f.Fuzz(func(t *testing.T, user string, signed bool, device, platform, version, bizList string, point uint64) {
		n++
		token := "not-a-token"
		if signed && user != "" {
			var err error
			if token, err = e.tokens.Sign(user, time.Hour); err != nil {
				if !utf8.ValidString(user) {
					return // refused: JSON cannot carry it
				}
				t.Fatal(err)
			}
		}
		var bizs []string
		if bizList != "" {
			bizs = strings.Split(bizList, ",")
		}
		req := &pb.ConnectReq{Token: token, Device: device, Platform: platform, AppVersion: version, Bizs: bizs,
			Comet: "comet-fuzz", Key: "k" + string(rune('a'+n%26))}
		for _, b := range bizs {
			req.Points = append(req.Points, &pb.Point{Channel: oplog.UserChannel(b, user), Id: point})
		}
		reply, err := e.l.Connect(context.Background(), req)
		if err != nil {
			code, msg := api.CodeOf(err)
			if code == protocol.CodeUnavailable || !(code >= 2000 && code < 3000 || code >= 4000 && code < 5000) {
				t.Fatalf("Connect refused with %d %q", code, msg)
			}
			return
		}
		if !signed || oplog.ValidID("device", device) != nil || platform == "" ||
			(version != "" && !oplog.ValidVersion(version)) {
			t.Fatalf("accepted %+v", req)
		}
		if reply.User != user {
			t.Fatalf("token of %q connected as %q", user, reply.User)
		}
		reg, _ := biz.NewRegistry(testBizs)
		asked := map[string]bool{}
		for _, b := range bizs {
			asked[b] = true
		}
		seen := map[string]bool{}
		for _, ch := range reply.Channels {
			b, err := reg.Get(ch.Biz)
			if err != nil || !asked[ch.Biz] || !b.Persistent || seen[ch.Biz] || ch.Channel != b.Channel(user, device) {
				t.Fatalf("channel %v for request %+v", ch, req)
			}
			seen[ch.Biz] = true
			if b.Target == biz.TargetUser && b.Scope != biz.ScopeGlobal && b.MultiDevice && ch.From != point {
				t.Fatalf("channel %s from %d, client point %d", ch.Channel, ch.From, point)
			}
		}
		for _, r := range reply.Rejected {
			if _, err := reg.Get(r.Biz); err == nil || !asked[r.Biz] {
				t.Fatalf("rejected %v", r)
			}
			seen[r.Biz] = true
		}
		for b := range asked {
			if bz, err := reg.Get(b); !seen[b] && (err != nil || bz.Persistent) {
				t.Fatalf("biz %q neither synced nor rejected", b)
			}
		}
	})
}
