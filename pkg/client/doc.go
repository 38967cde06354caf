// Package client is the msync Go SDK: it keeps one device connected to a
// comet, hands each registered biz's oplogs to the app in id order, and keeps
// the sync points that make delivery lossless and duplicate-free. It is the
// reference implementation of docs/protocol.md for the SDKs of other
// languages.
//
// A Client owns one goroutine that connects and reconnects (capped
// exponential backoff with full jitter), and per connection a heartbeat
// goroutine and one goroutine per channel that runs that channel's handler.
// Every method is goroutine-safe. Shutdown stops and waits for all of them.
//
// Delivery rules, per channel: oplogs reach the handler in id order, one at
// a time; a handler that returns nil acknowledges the oplog (the sync point
// is saved in the Store, then ACK is sent); one that returns an error is
// retried with backoff, and the oplogs after it wait. Oplogs at or below the
// sync point are dropped, so the app sees each one once, as long as the
// Store keeps its points (use a FileStore to survive restarts).
//
// Usage:
//
//	store, err := client.NewFileStore(filepath.Join(dataDir, "msync-points.json"))
//	if err != nil { ... }
//	c, err := client.New("sync.example.com:3101", client.Options{
//		TokenProvider: func(ctx context.Context) (string, error) { return api.MsyncToken(ctx) },
//		Device:        deviceID,
//		Platform:      "android",
//		AppVersion:    "5.12.1",
//		Store:         store,
//		Logger:        slog.Default(),
//		OnEvent:       func(e client.Event) { log.Println(e.Kind, e.Err) },
//	})
//	if err != nil { ... }
//	err = c.RegisterBiz("chat-unread", func(ctx context.Context, op client.Oplog) error {
//		return db.ApplyUnread(ctx, op.ID, op.Payload) // nil acks; an error retries
//	})
//	if err := c.Start(); err != nil { ... }
//	defer c.Close()
//	// app lifecycle: c.Background() / c.Foreground(); login: c.UpdateUser(ctx); logout: c.ClearUser()
package client
