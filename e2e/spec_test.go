package e2e

import (
	"testing"
	"time"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/protocol"
	"github.com/msync/msync/pkg/protocol/pb"
)

// TestSpecCodes pins the codes docs/protocol.md §4-§6 give for cases a
// client written from the spec alone asked about: which check wins on the
// first frame, the 4005 cases, and the platform and app_version grammar.
func TestSpecCodes(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	good := n.token(t, "spec")
	own := oplog.UserChannel("demo", "spec")
	auth := func(d *device, platform, version string) {
		d.sendMsg(protocol.OpAuth, &pb.Auth{Token: good, Device: "spec-dev", Platform: platform, AppVersion: version, Bizs: []string{"demo"}})
	}
	tests := []struct {
		name string
		run  func(d *device)
		code protocol.Code
	}{
		{"unknown op as the first frame", func(d *device) { d.send(protocol.Op(99), nil) }, protocol.CodeUnknownOp},
		{"server op as the first frame", func(d *device) { d.sendMsg(protocol.OpSync, &pb.Sync{}) }, protocol.CodeNotAuthed},
		{"server op after auth", func(d *device) { d.auth(good, "s1", "demo"); d.sendMsg(protocol.OpSync, &pb.Sync{}) }, protocol.CodeUnknownOp},
		{"ack for a channel not in the session", func(d *device) {
			d.auth(good, "s2", "demo")
			d.sendMsg(protocol.OpAck, &pb.Ack{Points: []*pb.ChannelPoint{{Channel: oplog.UserChannel("other", "spec"), Id: 0}}})
		}, protocol.CodeOutOfOrder},
		{"sync request above what was sent", func(d *device) {
			d.auth(good, "s3", "demo")
			d.sendMsg(protocol.OpSyncReq, &pb.SyncReq{Points: []*pb.ChannelPoint{{Channel: own, Id: 1}}})
		}, protocol.CodeOutOfOrder},
		{"empty platform", func(d *device) { auth(d, "", "1.0") }, protocol.CodeBadAuth},
		{"platform with a dot", func(d *device) { auth(d, "ios.17", "1.0") }, protocol.CodeBadAuth},
		{"app version with a suffix", func(d *device) { auth(d, "ios", "5.12.1-beta") }, protocol.CodeBadAuth},
		{"app version with an empty part", func(d *device) { auth(d, "ios", "5..1") }, protocol.CodeBadAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := dial(t, n)
			d.t = t
			tt.run(d)
			d.expectError(tt.code, 10*time.Second)
		})
	}
}

// TestSpecAuthAccepts pins what docs/protocol.md §5 says AUTH accepts: a
// platform in any case, no app version, and points for channels that are
// not the session's, which are ignored without an error.
func TestSpecAuthAccepts(t *testing.T) {
	t.Parallel()
	n := startNode(t, "")
	own := oplog.UserChannel("demo", "speca")
	d := dial(t, n)
	d.points[oplog.UserChannel("demo", "someone-else")] = 7
	d.points["no-channel-at-all"] = 3
	reply := d.authAs(n.token(t, "speca"), "speca-dev", "iOS", "", "demo")
	if len(reply.Channels) != 1 || reply.Channels[0].Channel != own || reply.Channels[0].From != 0 {
		t.Fatalf("AUTH_REPLY channels %v, want only %s from 0 (the foreign points ignored)", reply.Channels, own)
	}
	res := n.publish(t, toUser("speca", "after foreign points"))
	if got := d.waitGot(1, waitFor); got[0].ID != res.ID || got[0].Channel != own {
		t.Fatalf("got %+v, want id %d on %s", got, res.ID, own)
	}
}
