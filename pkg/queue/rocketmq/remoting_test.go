package rocketmq

// A scripted RocketMQ remoting-protocol server: one listener plays the name
// server, another the broker. It implements only the request codes
// rocketmq-client-go v2.1.2 sends for what the tests do, and records every
// request so tests can check what the client actually put on the wire.
// Name server: GET_ROUTEINFO_BY_TOPIC (105). Broker: SEND_MESSAGE (10, and
// the V2 form 310), HEARTBEAT (34), GET_CONSUMER_LIST_BY_GROUP (38),
// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ (41/42), QUERY_CONSUMER_OFFSET (14),
// UPDATE_CONSUMER_OFFSET (15, only for a group it knows: from a heartbeat or
// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, 200), GET_MAX_OFFSET (30) and PULL_MESSAGE (11, a
// long poll held up to pullHold, answered with messages in the broker's
// stored-message format). Anything else gets REQUEST_CODE_NOT_SUPPORTED and
// stays in the record. Messages live in memory only; there is one broker,
// one consumer group view (the latest consumer's heartbeat), no filtering.
//
// Frame (internal/remote/codec.go of the client): total length (4 bytes, big
// endian, not counting itself) | serialize type (1 byte, 0 = JSON) + header
// length (3 bytes) | JSON header | body.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Request codes (the client's internal/request.go) and response codes
// (internal/response.go) beyond those remoting.go uses.
const (
	codeSendMessage      = 10
	codePullMessage      = 11
	codeHeartbeat        = 34
	codeUnregisterClient = 35
	codeConsumerList     = 38
	codeLockBatch        = 41
	codeUnlockBatch      = 42
	codeSendMessageV2    = 310
	codeSendBatch        = 320

	resSystemError  = 1
	resSystemBusy   = 2
	resNotSupported = 3
	resPullNotFound = 19
	flagOneway      = 2
	propertySep     = 2 // between properties
	nameValueSep    = 1 // between a property's name and value
)

// request is one recorded request.
type request struct {
	Role string // "namesrv" or "broker"
	command
}

// sentMsg is one message a SEND_MESSAGE request stored.
type sentMsg struct {
	Topic      string
	QueueID    int
	Properties map[string]string
	Body       []byte
	Attempt    int // 1 for the first time this body was seen
}

// script decides how the broker answers a send; nil means success.
type script func(m sentMsg) (code int, delay time.Duration)

type remotingServer struct {
	t       *testing.T
	ns, br  net.Listener
	topic   string
	queues  int
	onSend  script
	wg      sync.WaitGroup
	closeMu sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool

	mu       sync.Mutex
	requests []request
	sent     []sentMsg
	attempts map[string]int      // body -> sends seen
	offsets  map[int]int64       // queue -> next offset
	open     map[string]int      // role -> connections open
	stored   map[int][]storedMsg // queue -> messages, index = queue offset
	commits  map[int]int64       // queue -> committed consumer offset
	groups   map[string]bool     // consumer groups the broker knows (heartbeat or create)
	arrived  chan struct{}       // closed and replaced when a message is stored
	done     chan struct{}       // closed by close: ends long polls
}

// storedMsg is a message as the broker keeps it for pulls.
type storedMsg struct {
	props string // the producer's properties, as sent
	body  []byte
	born  int64
}

// startRemoting starts a name server and a broker that serve topic with
// queues write/read queues.
func startRemoting(t *testing.T, topic string, queues int, onSend script) *remotingServer {
	t.Helper()
	s := &remotingServer{t: t, topic: topic, queues: queues, onSend: onSend, conns: map[net.Conn]struct{}{},
		attempts: map[string]int{}, offsets: map[int]int64{}, open: map[string]int{},
		stored: map[int][]storedMsg{}, commits: map[int]int64{}, groups: map[string]bool{}, arrived: make(chan struct{}), done: make(chan struct{})}
	var err error
	if s.ns, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if s.br, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	for role, ln := range map[string]net.Listener{"namesrv": s.ns, "broker": s.br} {
		s.wg.Go(func() { s.accept(role, ln) })
	}
	t.Cleanup(s.close)
	return s
}

func (s *remotingServer) nsAddr() string { return s.ns.Addr().String() }
func (s *remotingServer) brAddr() string { return s.br.Addr().String() }

func (s *remotingServer) close() {
	s.closeMu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	s.ns.Close()
	s.br.Close()
	for c := range s.conns {
		c.Close()
	}
	s.closeMu.Unlock()
	s.wg.Wait()
}

func (s *remotingServer) accept(role string, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.closeMu.Lock()
		if s.closed {
			s.closeMu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Go(func() { s.serve(role, c) })
		s.closeMu.Unlock()
	}
}

func (s *remotingServer) serve(role string, c net.Conn) {
	s.mu.Lock()
	s.open[role]++
	s.mu.Unlock()
	defer func() {
		c.Close()
		s.mu.Lock()
		s.open[role]--
		s.mu.Unlock()
	}()
	r := bufio.NewReader(c)
	var wmu sync.Mutex // delayed replies write from their own goroutines
	for {
		cmd, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.t.Logf("scripted %s: %v", role, err)
			}
			return
		}
		s.mu.Lock()
		s.requests = append(s.requests, request{Role: role, command: *cmd})
		s.mu.Unlock()
		if role == "broker" && cmd.Code == codePullMessage {
			// A long poll: answered from its own goroutine so the
			// connection keeps reading.
			s.wg.Go(func() {
				resp := s.pull(cmd)
				resp.Opaque, resp.Flag = cmd.Opaque, flagResponse
				wmu.Lock()
				defer wmu.Unlock()
				_ = writeReply(c, resp)
			})
			continue
		}
		resp, delay := s.handle(role, cmd)
		if cmd.Flag&flagOneway != 0 || resp == nil {
			continue
		}
		resp.Opaque, resp.Flag = cmd.Opaque, flagResponse
		write := func() {
			wmu.Lock()
			defer wmu.Unlock()
			_ = writeReply(c, resp)
		}
		if delay > 0 {
			s.wg.Go(func() {
				time.Sleep(delay) // deliberate: the scripted broker answers late
				write()
			})
			continue
		}
		write()
	}
}

func (s *remotingServer) handle(role string, cmd *command) (*command, time.Duration) {
	switch {
	case role == "namesrv" && cmd.Code == codeGetRouteInfo:
		if cmd.ExtFields["topic"] != s.topic {
			return &command{Code: resTopicNotExist, Remark: "No topic route info in name server for the topic: " + cmd.ExtFields["topic"]}, 0
		}
		route := map[string]any{
			"queueDatas":  []map[string]any{{"brokerName": "broker-a", "readQueueNums": s.queues, "writeQueueNums": s.queues, "perm": 6, "topicSynFlag": 0}},
			"brokerDatas": []map[string]any{{"cluster": "DefaultCluster", "brokerName": "broker-a", "brokerAddrs": map[string]string{"0": s.brAddr()}}},
		}
		body, _ := json.Marshal(route)
		return &command{Code: resSuccess, Body: body}, 0
	case role == "broker" && (cmd.Code == codeSendMessage || cmd.Code == codeSendMessageV2):
		f := cmd.ExtFields
		if cmd.Code == codeSendMessageV2 { // abbreviated field names
			f = map[string]string{"topic": f["b"], "queueId": f["e"], "properties": f["i"], "bornTimestamp": f["g"]}
		}
		q, _ := strconv.Atoi(f["queueId"])
		m := sentMsg{Topic: f["topic"], QueueID: q, Properties: parseProperties(f["properties"]), Body: cmd.Body}
		s.mu.Lock()
		s.attempts[string(m.Body)]++
		m.Attempt = s.attempts[string(m.Body)]
		s.mu.Unlock()
		code, delay := resSuccess, time.Duration(0)
		if s.onSend != nil {
			code, delay = s.onSend(m)
		}
		if code != resSuccess {
			return &command{Code: code, Remark: "scripted failure"}, delay
		}
		s.mu.Lock()
		off := s.offsets[q]
		s.offsets[q]++
		// Recorded only when stored: sent is what a consumer would read.
		s.sent = append(s.sent, m)
		born, _ := strconv.ParseInt(f["bornTimestamp"], 10, 64)
		s.stored[q] = append(s.stored[q], storedMsg{props: f["properties"], body: m.Body, born: born})
		close(s.arrived)
		s.arrived = make(chan struct{})
		s.mu.Unlock()
		return &command{Code: resSuccess, ExtFields: map[string]string{
			"msgId": fmt.Sprintf("7F00000100002A9F%016X", off), "queueId": strconv.Itoa(q), "queueOffset": strconv.FormatInt(off, 10)}}, delay
	case role == "broker" && cmd.Code == codeHeartbeat:
		// A broker auto-creating groups creates the consumers' groups here.
		var hb struct {
			Consumers []struct {
				Group string `json:"groupName"`
			} `json:"consumerDataSet"`
		}
		_ = json.Unmarshal(cmd.Body, &hb)
		s.mu.Lock()
		for _, c := range hb.Consumers {
			s.groups[c.Group] = true
		}
		s.mu.Unlock()
		return &command{Code: resSuccess}, 0
	case role == "broker" && cmd.Code == codeCreateGroup:
		var g struct {
			Group string `json:"groupName"`
		}
		if err := json.Unmarshal(cmd.Body, &g); err != nil || g.Group == "" {
			return &command{Code: resSystemError, Remark: fmt.Sprintf("bad group config %q", cmd.Body)}, 0
		}
		s.mu.Lock()
		s.groups[g.Group] = true
		s.mu.Unlock()
		return &command{Code: resSuccess}, 0
	case cmd.Code == codeUnregisterClient:
		return &command{Code: resSuccess}, 0
	case role == "broker" && cmd.Code == codeConsumerList:
		// Only this consumer is in the group: it gets every queue.
		return &command{Code: resSuccess, Body: []byte(`{"consumerIdList":["` + s.consumerID() + `"]}`)}, 0
	case role == "broker" && cmd.Code == codeLockBatch:
		// Grant every requested queue (the body lists them).
		var req struct {
			MQSet json.RawMessage `json:"mqSet"`
		}
		_ = json.Unmarshal(cmd.Body, &req)
		return &command{Code: resSuccess, Body: []byte(`{"lockOKMQSet":` + string(req.MQSet) + `}`)}, 0
	case role == "broker" && cmd.Code == codeUnlockBatch:
		return &command{Code: resSuccess}, 0
	case role == "broker" && cmd.Code == codeQueryOffset:
		q, _ := strconv.Atoi(cmd.ExtFields["queueId"])
		s.mu.Lock()
		off, ok := s.commits[q]
		s.mu.Unlock()
		if !ok && cmd.ExtFields["setZeroIfNotFound"] == "false" {
			return &command{Code: resQueryNotFound, Remark: "no offset"}, 0
		}
		// Like a real broker while the queue's first message is in memory
		// (always on JDK 17): a group without an offset is told 0.
		return &command{Code: resSuccess, ExtFields: map[string]string{"offset": strconv.FormatInt(off, 10)}}, 0
	case role == "broker" && cmd.Code == codeUpdateOffset:
		q, _ := strconv.Atoi(cmd.ExtFields["queueId"])
		off, _ := strconv.ParseInt(cmd.ExtFields["commitOffset"], 10, 64)
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.groups[cmd.ExtFields["consumerGroup"]] {
			return &command{Code: resGroupNotExist, Remark: "Group " + cmd.ExtFields["consumerGroup"] + " not exist!"}, 0
		}
		s.commits[q] = off // a broker stores what it is told
		return &command{Code: resSuccess}, 0
	case role == "broker" && cmd.Code == codeGetMaxOffset:
		q, _ := strconv.Atoi(cmd.ExtFields["queueId"])
		s.mu.Lock()
		n := len(s.stored[q])
		s.mu.Unlock()
		return &command{Code: resSuccess, ExtFields: map[string]string{"offset": strconv.Itoa(n)}}, 0
	}
	s.t.Logf("scripted %s: request code %d is not scripted; answered REQUEST_CODE_NOT_SUPPORTED", role, cmd.Code)
	return &command{Code: resNotSupported, Remark: fmt.Sprintf("scripted %s: request code %d not scripted", role, cmd.Code)}, 0
}

// consumerID is the id the latest consumer heartbeat announced (clientID),
// so the group listing names the test's current consumer.
func (s *remotingServer) consumerID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		r := s.requests[i]
		if r.Code != codeHeartbeat {
			continue
		}
		var hb struct {
			ClientID  string            `json:"clientID"`
			Consumers []json.RawMessage `json:"consumerDataSet"`
		}
		if json.Unmarshal(r.Body, &hb) == nil && hb.ClientID != "" && len(hb.Consumers) > 0 {
			return hb.ClientID
		}
	}
	return ""
}

// openConns returns how many connections the client holds to role.
func (s *remotingServer) openConns(role string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[role]
}

func (s *remotingServer) snapshot() (reqs []request, sent []sentMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...), append([]sentMsg(nil), s.sent...)
}

// pullHold is how long a pull with nothing to read is held (a real broker
// holds it up to suspendTimeoutMillis, 20s, and answers on arrival, as here).
const pullHold = 200 * time.Millisecond

// pull answers PULL_MESSAGE: the stored messages of the queue from
// queueOffset on (at most maxMsgNums), or, after waiting up to pullHold for
// one to arrive, PULL_NOT_FOUND.
func (s *remotingServer) pull(cmd *command) *command {
	q, _ := strconv.Atoi(cmd.ExtFields["queueId"])
	from, _ := strconv.ParseInt(cmd.ExtFields["queueOffset"], 10, 64)
	maxN, _ := strconv.Atoi(cmd.ExtFields["maxMsgNums"])
	if commit, err := strconv.ParseInt(cmd.ExtFields["commitOffset"], 10, 64); err == nil && commit > 0 {
		s.mu.Lock()
		s.commits[q] = max(s.commits[q], commit)
		s.mu.Unlock()
	}
	hold := time.NewTimer(pullHold)
	defer hold.Stop()
	for {
		s.mu.Lock()
		msgs := s.stored[q]
		arrived := s.arrived
		s.mu.Unlock()
		ext := func(next int64) map[string]string {
			return map[string]string{"nextBeginOffset": strconv.FormatInt(next, 10), "minOffset": "0",
				"maxOffset": strconv.Itoa(len(msgs)), "suggestWhichBrokerId": "0"}
		}
		if from < int64(len(msgs)) {
			end := min(int64(len(msgs)), from+int64(max(maxN, 1)))
			var body []byte
			for off := from; off < end; off++ {
				body = s.encodeMessage(body, q, off, msgs[off])
			}
			return &command{Code: resSuccess, ExtFields: ext(end), Body: body}
		}
		select {
		case <-arrived:
		case <-hold.C:
			return &command{Code: resPullNotFound, ExtFields: ext(from)}
		case <-s.done:
			return &command{Code: resPullNotFound, ExtFields: ext(from)}
		}
	}
}

// encodeMessage appends m in the broker's stored-message format (the
// client's primitive.DecodeMessage).
func (s *remotingServer) encodeMessage(b []byte, queueID int, offset int64, m storedMsg) []byte {
	topic, props := []byte(s.topic), []byte(m.props)
	size := 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + len(m.body) + 1 + len(topic) + 2 + len(props)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, 0xdaa320a7) // magic code
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(m.body))
	b = binary.BigEndian.AppendUint32(b, uint32(queueID))
	b = binary.BigEndian.AppendUint32(b, 0)                                  // flag
	b = binary.BigEndian.AppendUint64(b, uint64(offset))                     // queue offset
	b = binary.BigEndian.AppendUint64(b, uint64(queueID)<<32|uint64(offset)) // commit log offset
	b = binary.BigEndian.AppendUint32(b, 0)                                  // sys flag: IPv4 hosts, not compressed
	b = binary.BigEndian.AppendUint64(b, uint64(m.born))
	b = append(b, 127, 0, 0, 1, 0, 0, 0x30, 0x39) // born host 127.0.0.1:12345
	b = binary.BigEndian.AppendUint64(b, uint64(time.Now().UnixMilli()))
	b = append(b, 127, 0, 0, 1, 0, 0, 0x2a, 0x9f) // store host 127.0.0.1:10911
	b = binary.BigEndian.AppendUint32(b, 0)       // reconsume times
	b = binary.BigEndian.AppendUint64(b, 0)       // prepared transaction offset
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.body)))
	b = append(b, m.body...)
	b = append(b, byte(len(topic)))
	b = append(b, topic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(props)))
	return append(b, props...)
}

// committed returns the consumer offsets committed so far, per queue.
func (s *remotingServer) committed() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.commits)
}

func parseProperties(s string) map[string]string {
	props := map[string]string{}
	for _, kv := range bytes.Split([]byte(s), []byte{propertySep}) {
		k, v, ok := bytes.Cut(kv, []byte{nameValueSep})
		if ok {
			props[string(k)] = string(v)
		}
	}
	return props
}

// writeReply writes a response the way a Java server does.
func writeReply(w io.Writer, cmd *command) error {
	cmd.Language = json.RawMessage(`"JAVA"`)
	cmd.Version = 317
	return writeFrame(w, cmd)
}
