// Package api is what tiers say to each other, as protobuf messages and gRPC
// service interfaces (package pb). In all-in-one mode the same interfaces are
// satisfied in-process by the adapters here, so a tier never imports another.
//
// In-process calls pass messages by pointer: a callee must not keep or modify
// a request after it returns, and a caller must not modify a reply.
package api

import (
	"context"
	"slices"

	"google.golang.org/grpc"

	"github.com/msync/msync/pkg/api/pb"
)

// LocalLogic adapts an in-process logic server to the client interface comets use.
func LocalLogic(s pb.LogicServer) pb.LogicClient { return localLogic{s} }

type localLogic struct{ s pb.LogicServer }

func (l localLogic) Connect(ctx context.Context, in *pb.ConnectReq, _ ...grpc.CallOption) (*pb.ConnectReply, error) {
	return l.s.Connect(ctx, in)
}
func (l localLogic) Disconnect(ctx context.Context, in *pb.DisconnectReq, _ ...grpc.CallOption) (*pb.Empty, error) {
	return l.s.Disconnect(ctx, in)
}
func (l localLogic) Renew(ctx context.Context, in *pb.RenewReq, _ ...grpc.CallOption) (*pb.RenewReply, error) {
	return l.s.Renew(ctx, in)
}
func (l localLogic) Sync(ctx context.Context, in *pb.SyncReq, _ ...grpc.CallOption) (*pb.SyncReply, error) {
	return l.s.Sync(ctx, in)
}
func (l localLogic) Ack(ctx context.Context, in *pb.AckReq, _ ...grpc.CallOption) (*pb.Empty, error) {
	return l.s.Ack(ctx, in)
}

// LocalComet adapts an in-process comet server to the client interface job uses.
func LocalComet(s pb.CometServer) pb.CometClient { return localComet{s} }

type localComet struct{ s pb.CometServer }

func (c localComet) Push(ctx context.Context, in *pb.PushReq, _ ...grpc.CallOption) (*pb.PushReply, error) {
	return c.s.Push(ctx, in)
}
func (c localComet) Broadcast(ctx context.Context, in *pb.BroadcastReq, _ ...grpc.CallOption) (*pb.PushReply, error) {
	return c.s.Broadcast(ctx, in)
}
func (c localComet) Rooms(ctx context.Context, in *pb.RoomsReq, _ ...grpc.CallOption) (*pb.Empty, error) {
	return c.s.Rooms(ctx, in)
}
func (c localComet) Kick(ctx context.Context, in *pb.KickReq, _ ...grpc.CallOption) (*pb.Empty, error) {
	return c.s.Kick(ctx, in)
}

// Comets resolves a comet id to a client; job uses it to reach comets.
type Comets interface {
	// Comet returns the client for id, or false if the comet is unknown.
	Comet(id string) (pb.CometClient, bool)
	// IDs lists every comet known now (job broadcasts global-channel oplogs
	// to all of them), sorted so calls are deterministic.
	IDs() []string
}

// StaticComets is a fixed id -> client map (all-in-one mode, tests).
type StaticComets map[string]pb.CometClient

// Comet implements Comets.
func (s StaticComets) Comet(id string) (pb.CometClient, bool) { c, ok := s[id]; return c, ok }

// IDs implements Comets.
func (s StaticComets) IDs() []string {
	ids := make([]string, 0, len(s))
	for id := range s {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
