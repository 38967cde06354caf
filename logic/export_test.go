package logic

import "github.com/msync/msync/pkg/api/pb"

// TestTicket signs a session ticket as Connect does, for tests that drive
// Sync and Ack directly.
func (l *Logic) TestTicket(comet, key, user, device, platform, version string, channels ...string) []byte {
	b, err := l.signTicket(&pb.Ticket{Comet: comet, Key: key, User: user, Device: device,
		Platform: platform, AppVersion: version, Channels: channels})
	if err != nil {
		panic(err)
	}
	return b
}
