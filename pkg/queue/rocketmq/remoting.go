package rocketmq

// The remoting protocol, for the few requests rocketmq-client-go v2.1.2
// cannot make (its remoting client is internal): see pin.go. The scripted
// server in the tests speaks the same frames.
//
// Frame (the client's internal/remote/codec.go): total length (4 bytes, big
// endian, not counting itself) | serialize type (1 byte, 0 = JSON) + header
// length (3 bytes) | JSON header | body.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// Request codes (RocketMQ's RequestCode) and response codes (ResponseCode).
const (
	codeQueryOffset        = 14
	codeUpdateOffset       = 15
	codeGetMaxOffset       = 30
	codeCreateGroup        = 200 // UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
	codeGetRouteInfo       = 105
	resSuccess             = 0
	resTopicNotExist       = 17
	resQueryNotFound       = 22
	resGroupNotExist       = 26 // SUBSCRIPTION_GROUP_NOT_EXIST
	flagResponse           = 1
	maxFrameLen            = 16 << 20
	remotingVersion        = 317 // what v2.1.2 sends
	remotingRequestTimeout = 3 * time.Second
)

// command is the JSON header of a remoting frame, plus its body.
type command struct {
	Code      int               `json:"code"`
	Language  json.RawMessage   `json:"language,omitempty"`
	Version   int               `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark"`
	ExtFields map[string]string `json:"extFields"`
	Body      []byte            `json:"-"`
}

func readFrame(r io.Reader) (*command, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	total := binary.BigEndian.Uint32(hdr[0:4])
	if total < 4 || total > maxFrameLen {
		return nil, fmt.Errorf("remoting frame length %d", total)
	}
	if typ := hdr[4]; typ != 0 {
		return nil, fmt.Errorf("remoting serialize type %d: only JSON (0) is spoken", typ)
	}
	hlen := uint32(hdr[5])<<16 | uint32(hdr[6])<<8 | uint32(hdr[7])
	if hlen > total-4 {
		return nil, fmt.Errorf("remoting header length %d > frame %d", hlen, total)
	}
	rest := make([]byte, total-4)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, err
	}
	cmd := &command{}
	if err := json.Unmarshal(rest[:hlen], cmd); err != nil {
		return nil, fmt.Errorf("remoting header %q: %w", rest[:hlen], err)
	}
	cmd.Body = rest[hlen:]
	return cmd, nil
}

func writeFrame(w io.Writer, cmd *command) error {
	if cmd.ExtFields == nil {
		cmd.ExtFields = map[string]string{}
	}
	h, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	buf := make([]byte, 8, 8+len(h)+len(cmd.Body))
	binary.BigEndian.PutUint32(buf[0:4], uint32(4+len(h)+len(cmd.Body)))
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(h))) // type 0 (JSON) in the top byte
	buf = append(append(buf, h...), cmd.Body...)
	_, err = w.Write(buf)
	return err
}

// remotingConn is one synchronous remoting connection: one request at a
// time, each bounded by remotingRequestTimeout and ctx.
type remotingConn struct {
	addr   string
	c      net.Conn
	opaque int32
}

func dialRemoting(ctx context.Context, addr string) (*remotingConn, error) {
	d := net.Dialer{Timeout: remotingRequestTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &remotingConn{addr: addr, c: c}, nil
}

func (r *remotingConn) Close() error { return r.c.Close() }

// call sends a request and returns its response. A server does not send
// requests of its own on a connection that never sent a heartbeat, so
// anything but the response to this request is an error.
func (r *remotingConn) call(ctx context.Context, code int, ext map[string]string, body []byte) (*command, error) {
	r.opaque++
	deadline := time.Now().Add(remotingRequestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := r.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	req := &command{Code: code, Language: json.RawMessage(`"GO"`), Version: remotingVersion, Opaque: r.opaque,
		ExtFields: ext, Body: body}
	if err := writeFrame(r.c, req); err != nil {
		return nil, fmt.Errorf("request %d to %s: %w", code, r.addr, err)
	}
	resp, err := readFrame(r.c)
	if err != nil {
		return nil, fmt.Errorf("request %d to %s: %w", code, r.addr, err)
	}
	if resp.Flag&flagResponse == 0 || resp.Opaque != r.opaque {
		return nil, fmt.Errorf("request %d to %s: answered by code %d opaque %d (want the response to opaque %d)",
			code, r.addr, resp.Code, resp.Opaque, r.opaque)
	}
	return resp, nil
}
