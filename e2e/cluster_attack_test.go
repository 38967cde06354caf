package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/rpc"
)

// The attacks of the security review (issue 15, finding 1) against a real
// cluster: a peer that reaches the tiers' gRPC ports with no credential at
// all. Each must fail and leave the victim's device unharmed.

// rogueComet is a Comet service an attacker runs to capture live pushes.
type rogueComet struct {
	pb.UnimplementedCometServer
	mu  sync.Mutex
	got []string
}

func (r *rogueComet) Push(_ context.Context, req *pb.PushReq) (*pb.PushReply, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range req.Items {
		r.got = append(r.got, string(it.GetOplog().GetPayload()))
	}
	return &pb.PushReply{}, nil
}

func (r *rogueComet) captured() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func plainConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func attackCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 3*time.Second)
}

// guessKeys are the connection keys an attacker tries: the comet used to
// number connections 1, 2, 3...
func guessKeys() []string {
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = strconv.Itoa(i + 1)
	}
	return keys
}

func TestClusterAttacksWithoutCredentials(t *testing.T) {
	bin := msyncBinary(t, t.TempDir())
	c := startCluster(t, bin)
	cometP, addr := c.comet()
	c.publish("victim", "victim private note #1")
	logicRPC := pb.NewLogicClient(plainConn(t, c.grpc))
	cometRPC := pb.NewCometClient(plainConn(t, cometP.addr("grpc")))

	t.Run("ReadAnotherUsersOplogs", func(t *testing.T) {
		ctx, cancel := attackCtx()
		defer cancel()
		ch := oplog.UserChannel("demo", "victim")
		r, err := logicRPC.Sync(ctx, &pb.SyncReq{Device: "mallory-dev", User: "victim", Platform: "ios",
			Cursors: []*pb.Cursor{{Channel: ch}}})
		for _, p := range r.GetPages() {
			for _, op := range p.Oplogs {
				t.Errorf("attacker read %s/%d %q", p.Channel, op.Id, op.Payload)
			}
		}
		if err == nil {
			t.Errorf("unauthenticated Logic.Sync succeeded")
		}
	})

	t.Run("InjectAForgedOplog", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "ivy")
		ivy := c.connect(addr, "ivy", "ivy-phone", nil)
		c.publish("ivy", "ivy real #1")
		ivy.waitGot(1, waitFor)
		ctx, cancel := attackCtx()
		defer cancel()
		forged := &oplog.Oplog{Channel: ch, Id: 2, Biz: "demo", Payload: []byte("forged by mallory"), CreatedMs: time.Now().UnixMilli()}
		r, err := cometRPC.Push(ctx, &pb.PushReq{Items: []*pb.PushItem{{Keys: guessKeys(), Oplog: forged}}})
		if err == nil {
			t.Errorf("unauthenticated Comet.Push succeeded (delivered %d)", r.GetDelivered())
		}
		c.publish("ivy", "ivy real #2")
		got := ivy.waitGot(2, waitFor)
		if got[1].ID != 2 || got[1].Payload != "ivy real #2" {
			t.Errorf("the device's #2 is %q (id %d), want the real one", got[1].Payload, got[1].ID)
		}
	})

	t.Run("AckAheadSoTheDeviceNeverReceives", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "ace")
		ace := c.connect(addr, "ace", "ace-phone", nil)
		c.publish("ace", "ace real #1")
		ace.waitGot(1, waitFor)
		ctx, cancel := attackCtx()
		defer cancel()
		_, err := logicRPC.Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{{Device: "ace-phone", User: "ace", Channel: ch, Id: 1 << 40}}})
		if err == nil {
			t.Log("unauthenticated Logic.Ack answered without error; checking the stored point")
		}
		// The same device reinstalled (no points of its own) starts from
		// the server's stored point.
		ace.close()
		d := dialAddr(t, addr)
		reply := d.auth(c.token("ace"), "ace-phone", "demo")
		for _, ci := range reply.Channels {
			if ci.Channel == ch && ci.From > 1 {
				t.Errorf("ace-phone resumes at %d: the attacker's ack moved its point", ci.From)
			}
		}
	})

	t.Run("HijackTheCometRegistration", func(t *testing.T) {
		c := *c
		c.t = t
		ch := oplog.UserChannel("demo", "vera")
		vera := c.connect(addr, "vera", "vera-phone", nil)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rogue := &rogueComet{}
		srv := grpc.NewServer()
		srv.RegisterService(&pb.Comet_ServiceDesc, rogue)
		go func() { _ = srv.Serve(ln) }()
		defer srv.Stop()
		ctx, cancel := attackCtx()
		defer cancel()
		if _, err := logicRPC.Renew(ctx, &pb.RenewReq{Comet: cometP.name, GrpcAddr: ln.Addr().String()}); err == nil {
			t.Errorf("unauthenticated Logic.Renew re-registered %s at %s", cometP.name, ln.Addr())
		}
		// Job lists the registry every 200ms here: publish across several
		// refreshes; every oplog must reach the real device, none the rogue.
		for i := range 5 {
			c.publish("vera", fmt.Sprintf("vera real after hijack %d", i))
			time.Sleep(250 * time.Millisecond) // deliberate: spread the publishes over job's registry refreshes
		}
		if got := rogue.captured(); len(got) > 0 {
			t.Errorf("the rogue comet captured %q", got)
		}
		vera.waitGot(5, waitFor)
		checkInOrder(t, vera, ch, 1, 5, nil)
	})

	t.Run("KickTheDevice", func(t *testing.T) {
		c := *c
		c.t = t
		kay := c.connect(addr, "kay", "kay-phone", nil)
		ctx, cancel := attackCtx()
		defer cancel()
		if _, err := cometRPC.Kick(ctx, &pb.KickReq{Keys: guessKeys(), Code: 4000, Reason: "mallory"}); err == nil {
			t.Errorf("unauthenticated Comet.Kick succeeded")
		}
		c.publish("kay", "kay after kick")
		kay.waitGot(1, waitFor)
		kay.mu.Lock()
		kicks := len(kay.kicks)
		kay.mu.Unlock()
		if kicks > 0 {
			t.Errorf("the device was kicked")
		}
	})
}

// TestClusterAttacksWithAPeerCertificate: a peer holding a valid tier
// certificate (a compromised comet-2, or job's) still cannot act for
// another comet or another role, nor read a session it did not open.
func TestClusterAttacksWithAPeerCertificate(t *testing.T) {
	bin := msyncBinary(t, t.TempDir())
	c := startCluster(t, bin)
	cometP, addr := c.comet() // comet-1
	ch := oplog.UserChannel("demo", "wes")
	wes := c.connect(addr, "wes", "wes-phone", nil)
	c.publish("wes", "wes private #1")
	wes.waitGot(1, waitFor)

	load := func(name string) *rpc.TLS {
		m, err := rpc.LoadTLS(filepath.Join(c.certs, "ca.crt"), filepath.Join(c.certs, name+".crt"), filepath.Join(c.certs, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	dial := func(m *rpc.TLS, role, addr string) *grpc.ClientConn {
		cc, err := rpc.Dial([]string{addr}, rpc.DialConfig{TLS: m, ServerRole: role, CallTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	comet2 := load("comet-2")
	asComet2 := pb.NewLogicClient(dial(comet2, rpc.RoleLogic, c.grpc))
	ctx := context.Background()
	refused := func(what string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}

	r, err := asComet2.Sync(ctx, &pb.SyncReq{Device: "wes-phone", User: "wes", Platform: "ios", Cursors: []*pb.Cursor{{Channel: ch}}})
	if len(r.GetPages()) > 0 || err == nil {
		t.Errorf("comet-2 read wes's channel without a ticket: %v, %v", r, err)
	}
	_, err = asComet2.Renew(ctx, &pb.RenewReq{Comet: cometP.name, GrpcAddr: "127.0.0.1:1"})
	refused("comet-2 renewing as comet-1", err, codes.PermissionDenied)
	_, err = asComet2.Renew(ctx, &pb.RenewReq{Comet: "comet-2", GrpcAddr: "127.0.0.2:3102"})
	refused("comet-2 registering an address its certificate does not name", err, codes.PermissionDenied)
	_, err = asComet2.Connect(ctx, &pb.ConnectReq{Comet: cometP.name, Key: "k", Token: c.token("wes"), Device: "wes-phone", Platform: "ios", Bizs: []string{"demo"}})
	refused("comet-2 opening a session as comet-1", err, codes.PermissionDenied)
	_, err = pb.NewCometClient(dial(comet2, rpc.RoleComet, cometP.addr("grpc"))).Kick(ctx, &pb.KickReq{Keys: []string{"1"}, Code: 4000})
	refused("comet-2 kicking on comet-1 (job only)", err, codes.PermissionDenied)
	_, err = pb.NewLogicClient(dial(load("job"), rpc.RoleLogic, c.grpc)).Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{{Device: "wes-phone", Channel: ch, Id: 1 << 40}}})
	refused("job calling logic (comets only)", err, codes.PermissionDenied)

	// Acks without the session's ticket move nothing: wes, reinstalled,
	// resumes from its real point.
	_, _ = asComet2.Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{{Device: "wes-phone", User: "wes", Channel: ch, Id: 1 << 40}}})
	wes.close()
	d := dialAddr(t, addr)
	for _, ci := range d.auth(c.token("wes"), "wes-phone", "demo").Channels {
		if ci.Channel == ch && ci.From > 1 {
			t.Errorf("wes-phone resumes at %d after comet-2's ack", ci.From)
		}
	}
}
