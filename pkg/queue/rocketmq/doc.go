// Package rocketmq is the cluster-mode queue backend, on
// github.com/apache/rocketmq-client-go/v2 v2.1.2 (remoting protocol, RocketMQ
// 4.x and 5.x brokers).
//
// Producer: one RocketMQ producer per process (instance name "<Instance>-producer"),
// name servers always given explicitly (the client's default resolver points
// at an internal address), a hash queue selector with the sharding key set to
// Message.Key, so one key always lands in one queue; within one Send the
// messages of a key are sent one after the other (a RocketMQ batch would put
// several keys into one queue chosen at random), different keys concurrently.
// Each message is bounded by SendTimeout and the client retries it at most
// Retries times; a retry after a timeout can store a message twice, which is
// why consumers dedupe (package dedupe).
//
// Consumer: an orderly push consumer in CLUSTERING mode (instance name
// "<Instance>-consumer"): every queue is locked by one job instance at a time
// and its messages are handed over in order. The callback returns only
// ConsumeSuccess or SuspendCurrentQueueAMoment: ConsumeRetryLater in orderly
// mode commits the offset and silently skips the messages. A handler error or
// panic suspends the queue and redelivers the same messages after a capped
// exponential backoff; MaxReconsumeTimes stays unlimited so nothing is ever
// moved to a dead-letter queue behind later messages.
//
// Broadcasts (global oplogs, room and all-user pushes) need no BROADCASTING
// consumer: each message is consumed by exactly one job instance, and that
// instance pushes it to every comet it finds in the directory. A BROADCASTING
// consumer would make every job instance push every broadcast to every comet
// (N duplicates per session), and BROADCASTING offsets live on the local disk
// of each consumer, so a restarted job replays or skips. Keeping broadcasts on
// the clustered push stream also keeps a global channel in id order (its key
// is the channel, so it has one queue).
//
// Known limitations of rocketmq-client-go v2.1.2, measured with the scripted
// remoting server in the tests or read in the client's source:
//   - Shutdown leaves goroutines behind (issue apache/rocketmq-client-go#1147,
//     open): schedulers sleep up to 10s before they notice, and each push
//     consumer's statistics goroutines sleep until the next minute, hour or
//     day. Shutdown here waits for our handler calls and the client's
//     Shutdown, not for those; create one producer and one consumer per
//     process (main_test.go lists exactly what the tests tolerate).
//   - Shutdown never closes the client's connection to the name server (its
//     name-server remoting client has no shutdown): one idle connection and
//     one goroutine stay per producer or consumer (seen on RocketMQ 5.3.3).
//   - Stopping a running push consumer is a data race inside the client
//     (rmqClient.close is a plain bool read by its pull and lock goroutines):
//     harmless in a normal build, reported under -race.
//   - On the first route lookup the client publishes the topic's queues
//     before the broker's address, so concurrent first sends fail; the
//     Producer sends one message at a time until one succeeded.
//   - A broker behind on sends answers SYSTEM_BUSY (flow control) and stores
//     nothing; the client's retries come at once and meet the same, so the
//     Producer backs off and resends until SendTimeout.
//   - A send that times out is retried by the client at once, and each retry
//     is written although the context expired: one timed-out Send can store
//     1+Retries copies (consumers dedupe; a slow broker gets more load).
//   - The client records a successful batch's offset after the callback
//     returned; a Shutdown right then can miss it, and the next owner of the
//     queue redelivers that batch (at least once; dedupe drops it).
//   - Every send header asks an auto-creating broker for 4 queues
//     (Config.Queues is capped accordingly): create the topic with mqadmin.
//   - Shutdown unlocks the consumer's queues, so a successor takes them over
//     within seconds (measured 3s on 5.3.3). A killed job instance cannot:
//     its queue locks stay until the broker expires them
//     (rocketmq.broker.rebalance.lockMaxLiveTime, 60s by default: measured
//     63s to a successor's first message). The consumer renews its locks
//     every 5s (the client's default is 20s), so brokers can run that
//     lifetime at 15s (scripts/engines.sh does): measured 23s on 5.3.3.
//     Pushes of those queues wait that long; devices catch up by sync.
//   - The Go hash selector is FNV-1a, the Java client's is String.hashCode:
//     every producer of the push stream must be this package, or keys may
//     land in two queues.
//   - WithSuspendCurrentQueueTimeMillis is ignored in orderly mode; the
//     callback sets the suspension on the orderly context itself.
//   - CONSUME_FROM_LAST_OFFSET starts a new group at offset 0 on a young
//     queue (the broker answers 0 to a group without offset, and the client
//     cannot ask it not to): Consume commits the queues' ends as a new
//     group's offsets before the client starts (pin.go), over a small
//     remoting client of its own (remoting.go).
//
// Producers and consumers are safe for concurrent use.
package rocketmq
