package cassandra

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/datastax/go-cassandra-native-protocol/datatype"
	"github.com/datastax/go-cassandra-native-protocol/frame"
	"github.com/datastax/go-cassandra-native-protocol/message"
	"github.com/datastax/go-cassandra-native-protocol/primitive"

	"github.com/msync/msync/pkg/oplog"
	"github.com/msync/msync/pkg/store"
)

// This file is a scripted CQL server (native protocol v4, built on
// go-cassandra-native-protocol's codecs) that models the oplogs table well
// enough to check what gocql really sends for Append: statement shapes,
// partitions, consistency levels and CAS outcome handling.

type pkey struct {
	ch string
	b  int64
}

type prow struct {
	uuid []byte
	body []byte
}

type partition struct {
	maxID *int64
	rows  map[int64]prow
}

// wireReq is one recorded EXECUTE or BATCH.
type wireReq struct {
	batch       bool
	batchType   primitive.BatchType
	stmts       []string
	values      [][]*primitive.Value
	consistency primitive.ConsistencyLevel
	serial      *primitive.ConsistencyLevel
}

type fakeCQL struct {
	t  *testing.T
	ln net.Listener
	// ln2 is a second contact point serving the same data. Note: a
	// SimpleRetryPolicy set on the batch (mutation-tested) still sent one
	// batch here, so "exactly one batch" does not prove no policy is set;
	// the code sets none (casBatch, newCluster).
	ln2 net.Listener
	st  stmts
	wg  sync.WaitGroup

	mu       sync.Mutex
	prepared map[string]string
	parts    map[pkey]*partition
	reqs     []wireReq
	conns    []net.Conn
	// beforeBatch, if set, runs (under mu) before a BATCH is applied; a
	// non-nil reply is sent instead, after the batch is applied when
	// applyFirst is true.
	beforeBatch func(n int, r wireReq) (reply message.Message, applyFirst bool)
	// failSerialReads makes SERIAL/LOCAL_SERIAL reads fail.
	failSerialReads bool
	batches         int
}

func newFakeCQL(t *testing.T) *fakeCQL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCQL{t: t, ln: ln, ln2: ln2, st: newStmts("msync"), prepared: map[string]string{}, parts: map[pkey]*partition{}}
	f.wg.Add(2)
	go f.accept(ln)
	go f.accept(ln2)
	t.Cleanup(func() {
		_ = ln.Close()
		_ = ln2.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeCQL) accept(ln net.Listener) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fakeCQL) serve(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	codec := frame.NewCodec()
	for {
		req, err := codec.DecodeFrame(c)
		if err != nil {
			return
		}
		resp := f.handle(req.Body.Message)
		out := frame.NewFrame(req.Header.Version, req.Header.StreamId, resp)
		if err := codec.EncodeFrame(out, c); err != nil {
			return
		}
	}
}

var (
	tBig, tInt, tText, tUUID, tBlob, tBool = datatype.Bigint, datatype.Int, datatype.Varchar, datatype.Uuid, datatype.Blob, datatype.Boolean
)

// types gives each statement's bind variable and result column types, as a
// real server derives them from the schema.
func (f *fakeCQL) types(q string) (vars []datatype.DataType, cols []string, colTypes []datatype.DataType) {
	switch q {
	case f.st.casAdvance:
		return []datatype.DataType{tBig, tText, tBig, tBig}, nil, nil
	case f.st.casInit:
		return []datatype.DataType{tBig, tText, tBig}, nil, nil
	case f.st.insertOp:
		return []datatype.DataType{tText, tBig, tBig, tUUID, tBlob, tInt}, nil, nil
	case f.st.selectHead:
		return []datatype.DataType{tText, tBig}, []string{"max_id"}, []datatype.DataType{tBig}
	case f.st.selectRange:
		return []datatype.DataType{tText, tBig, tBig, tBig, tInt}, []string{"id", "body"}, []datatype.DataType{tBig, tBlob}
	case f.st.selectUUIDs:
		return []datatype.DataType{tText, tBig, tBig, tBig}, []string{"id", "op_uuid"}, []datatype.DataType{tBig, tUUID}
	}
	f.t.Errorf("scripted server: unexpected statement prepared: %s", q)
	return nil, nil, nil
}

func colsMeta(names []string, types []datatype.DataType) *message.RowsMetadata {
	m := &message.RowsMetadata{ColumnCount: int32(len(names))}
	for i, n := range names {
		m.Columns = append(m.Columns, &message.ColumnMetadata{Keyspace: "msync", Table: "oplogs", Name: n, Index: int32(i), Type: types[i]})
	}
	return m
}

func (f *fakeCQL) handle(m message.Message) message.Message {
	switch m := m.(type) {
	case *message.Options:
		return &message.Supported{Options: map[string][]string{"CQL_VERSION": {"3.4.4"}, "COMPRESSION": {}}}
	case *message.Startup, *message.Register:
		return &message.Ready{}
	case *message.Query:
		q := strings.ToLower(m.Query)
		if r := f.systemReply(q); r != nil {
			return r
		}
		f.t.Errorf("scripted server: unexpected unprepared query %q", m.Query)
		return &message.Invalid{ErrorMessage: "unexpected"}
	case *message.Prepare:
		if strings.Contains(strings.ToLower(m.Query), "system") {
			id := []byte("sys:" + m.Query)
			f.mu.Lock()
			f.prepared[hex.EncodeToString(id)] = m.Query
			f.mu.Unlock()
			return &message.PreparedResult{PreparedQueryId: id, VariablesMetadata: &message.VariablesMetadata{}, ResultMetadata: &message.RowsMetadata{}}
		}
		vars, cols, ctypes := f.types(m.Query)
		id := []byte(fmt.Sprintf("%x", len(m.Query)) + m.Query[:8]) // stable per text
		f.mu.Lock()
		f.prepared[hex.EncodeToString(id)] = m.Query
		f.mu.Unlock()
		vm := &message.VariablesMetadata{}
		for i, ty := range vars {
			vm.Columns = append(vm.Columns, &message.ColumnMetadata{Keyspace: "msync", Table: "oplogs", Name: fmt.Sprintf("v%d", i), Index: int32(i), Type: ty})
		}
		return &message.PreparedResult{PreparedQueryId: id, VariablesMetadata: vm, ResultMetadata: colsMeta(cols, ctypes)}
	case *message.Execute:
		f.mu.Lock()
		defer f.mu.Unlock()
		q := f.prepared[hex.EncodeToString(m.QueryId)]
		if r := f.systemReply(strings.ToLower(q)); r != nil {
			return r
		}
		r := wireReq{stmts: []string{q}, values: [][]*primitive.Value{m.Options.PositionalValues}, consistency: m.Options.Consistency, serial: m.Options.SerialConsistency}
		f.reqs = append(f.reqs, r)
		return f.read(q, m.Options.PositionalValues, m.Options.Consistency)
	case *message.Batch:
		f.mu.Lock()
		defer f.mu.Unlock()
		r := wireReq{batch: true, batchType: m.Type, consistency: m.Consistency, serial: m.SerialConsistency}
		for _, c := range m.Children {
			r.stmts = append(r.stmts, f.prepared[hex.EncodeToString(c.Id)])
			r.values = append(r.values, c.Values)
		}
		f.reqs = append(f.reqs, r)
		f.batches++
		if f.beforeBatch != nil {
			if reply, applyFirst := f.beforeBatch(f.batches, r); reply != nil {
				if applyFirst {
					f.applyBatch(r)
				}
				return reply
			}
		}
		return f.applyBatch(r)
	}
	f.t.Errorf("scripted server: unexpected message %T", m)
	return &message.ProtocolError{ErrorMessage: "unexpected"}
}

// systemReply answers the driver's own queries: system.local with the
// node's row, system.peers and system_schema.* with no rows (anything else
// and gocql waits for schema agreement for seconds).
func (f *fakeCQL) systemReply(q string) message.Message {
	if strings.Contains(q, "from system.local") {
		return f.systemLocal()
	}
	if strings.Contains(q, "system") {
		return &message.RowsResult{Metadata: &message.RowsMetadata{}, Data: message.RowSet{}}
	}
	return nil
}

// systemLocal is the control connection's view of the one node (the
// columns drivers read, as in the protocol module's client/system.go).
func (f *fakeCQL) systemLocal() message.Message {
	names := []string{"key", "broadcast_address", "cluster_name", "cql_version", "data_center", "host_id",
		"listen_address", "partitioner", "rack", "release_version", "rpc_address", "schema_version", "tokens"}
	types := []datatype.DataType{tText, datatype.Inet, tText, tText, tText, tUUID, datatype.Inet, tText, tText, tText,
		datatype.Inet, tUUID, datatype.NewSet(tText)}
	ip := []byte{127, 0, 0, 1}
	hostID := []byte{0xC0, 0xD1, 0xD2, 0x1E, 0xBB, 0x01, 0x41, 0x96, 0x86, 0xDB, 0xBC, 0x31, 0x7B, 0xC1, 0x79, 0x6A}
	tok := "-9223372036854775808"
	tokens := binary.BigEndian.AppendUint32(nil, 1)
	tokens = binary.BigEndian.AppendUint32(tokens, uint32(len(tok)))
	tokens = append(tokens, tok...)
	row := message.Row{[]byte("local"), ip, []byte("scripted"), []byte("3.4.4"), []byte("dc1"), hostID, ip,
		[]byte("org.apache.cassandra.dht.Murmur3Partitioner"), []byte("rack1"), []byte("3.11.2"), ip, hostID, tokens}
	m := &message.RowsMetadata{ColumnCount: int32(len(names))}
	for i, n := range names {
		m.Columns = append(m.Columns, &message.ColumnMetadata{Keyspace: "system", Table: "local", Name: n, Index: int32(i), Type: types[i]})
	}
	return &message.RowsResult{Metadata: m, Data: message.RowSet{row}}
}

func i64(v *primitive.Value) int64 { return int64(binary.BigEndian.Uint64(v.Contents)) }

func (f *fakeCQL) part(ch string, b int64) *partition {
	p := f.parts[pkey{ch, b}]
	if p == nil {
		p = &partition{rows: map[int64]prow{}}
		f.parts[pkey{ch, b}] = p
	}
	return p
}

// applyBatch evaluates the batch's one condition and applies it atomically.
func (f *fakeCQL) applyBatch(r wireReq) message.Message {
	cond := r.values[0]
	ch, b := string(cond[1].Contents), i64(cond[2])
	p := f.part(ch, b)
	ok := false
	switch r.stmts[0] {
	case f.st.casInit:
		ok = p.maxID == nil
	case f.st.casAdvance:
		ok = p.maxID != nil && *p.maxID == i64(cond[3])
	default:
		f.t.Errorf("batch does not start with the max_id condition: %s", r.stmts[0])
	}
	if !ok {
		row := message.Row{{0}, []byte(ch), be64(b), nil}
		if p.maxID != nil {
			row[3] = be64(*p.maxID)
		}
		return &message.RowsResult{Metadata: colsMeta([]string{"[applied]", "channel", "bucket", "max_id"}, []datatype.DataType{tBool, tText, tBig, tBig}), Data: message.RowSet{row}}
	}
	n := i64(cond[0])
	p.maxID = &n
	for _, v := range r.values[1:] {
		p.rows[i64(v[2])] = prow{uuid: v[3].Contents, body: v[4].Contents}
	}
	return &message.RowsResult{Metadata: colsMeta([]string{"[applied]"}, []datatype.DataType{tBool}), Data: message.RowSet{{{1}}}}
}

func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func (f *fakeCQL) read(q string, vals []*primitive.Value, cons primitive.ConsistencyLevel) message.Message {
	if f.failSerialReads && (cons == primitive.ConsistencyLevelSerial || cons == primitive.ConsistencyLevelLocalSerial) {
		return &message.ReadTimeout{ErrorMessage: "scripted serial read timeout", Consistency: cons, Received: 0, BlockFor: 2}
	}
	_, cols, types := f.types(q)
	p := f.part(string(vals[0].Contents), i64(vals[1]))
	res := &message.RowsResult{Metadata: colsMeta(cols, types), Data: message.RowSet{}}
	switch q {
	case f.st.selectHead:
		if p.maxID != nil {
			res.Data = append(res.Data, message.Row{be64(*p.maxID)})
		}
	case f.st.selectRange, f.st.selectUUIDs:
		for id := i64(vals[2]) + 1; id <= i64(vals[3]); id++ {
			if row, ok := p.rows[id]; ok {
				if q == f.st.selectRange {
					res.Data = append(res.Data, message.Row{be64(id), row.body})
				} else {
					res.Data = append(res.Data, message.Row{be64(id), row.uuid})
				}
			}
		}
	}
	return res
}

func (f *fakeCQL) requests() []wireReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wireReq(nil), f.reqs...)
}

func (f *fakeCQL) batchReqs() []wireReq {
	var out []wireReq
	for _, r := range f.requests() {
		if r.batch {
			out = append(out, r)
		}
	}
	return out
}

func openWire(t *testing.T, f *fakeCQL, bucketSize int) *Store {
	t.Helper()
	cfg := Config{Hosts: []string{f.ln.Addr().String(), f.ln2.Addr().String()}, Timeout: 2 * time.Second, BucketSize: bucketSize, disableHostLookup: true}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open against scripted server: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func wireCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ops(ch string, n int) []*oplog.Oplog {
	var out []*oplog.Oplog
	for i := range n {
		out = append(out, &oplog.Oplog{Channel: ch, Biz: "wire", Payload: []byte(fmt.Sprintf("p%d", i))})
	}
	return out
}

func resultIDs(res []store.AppendResult) []uint64 {
	var ids []uint64
	for _, r := range res {
		ids = append(ids, r.ID)
	}
	return ids
}

// checkBatchShape checks one LWT batch: logged, the max_id condition first,
// then only INSERTs, every statement on the same (channel, bucket), ids
// consecutive after the condition's current value, at LOCAL_QUORUM with
// LOCAL_SERIAL.
func checkBatchShape(t *testing.T, st stmts, r wireReq, bucketSize int64, ch string, b int64, cur int64, n int) {
	t.Helper()
	if r.batchType != primitive.BatchTypeLogged {
		t.Errorf("batch type %v, want LOGGED", r.batchType)
	}
	if r.consistency != primitive.ConsistencyLevelLocalQuorum {
		t.Errorf("batch consistency %v, want LOCAL_QUORUM", r.consistency)
	}
	if r.serial == nil || *r.serial != primitive.ConsistencyLevelLocalSerial {
		t.Errorf("batch serial consistency %v, want LOCAL_SERIAL", r.serial)
	}
	if len(r.stmts) != n+1 {
		t.Fatalf("batch has %d statements, want 1 condition + %d inserts", len(r.stmts), n)
	}
	// A bucket's first ids initialise its max_id (IF max_id = null).
	wantCond := st.casAdvance
	if cur == 0 || cur%bucketSize == bucketSize-1 {
		wantCond = st.casInit
	}
	if r.stmts[0] != wantCond {
		t.Errorf("first statement %q, want %q", r.stmts[0], wantCond)
	}
	if got := i64(r.values[0][0]); got != cur+int64(n) {
		t.Errorf("condition sets max_id %d, want %d", got, cur+int64(n))
	}
	if r.stmts[0] == st.casAdvance {
		if got := i64(r.values[0][3]); got != cur {
			t.Errorf("condition IF max_id = %d, want %d", got, cur)
		}
	}
	for i, v := range r.values {
		var gotCh string
		var gotB int64
		if i == 0 {
			gotCh, gotB = string(v[1].Contents), i64(v[2])
		} else {
			if r.stmts[i] != st.insertOp {
				t.Errorf("statement %d: %q, want the oplog insert", i, r.stmts[i])
				continue
			}
			gotCh, gotB = string(v[0].Contents), i64(v[1])
			if id := i64(v[2]); id != cur+int64(i) {
				t.Errorf("insert %d: id %d, want %d", i, id, cur+int64(i))
			}
		}
		if gotCh != ch || gotB != b {
			t.Errorf("statement %d targets partition (%q, %d), want (%q, %d): not single-partition", i, gotCh, gotB, ch, b)
		}
	}
}

func TestWireAppendBatchShape(t *testing.T) {
	f := newFakeCQL(t)
	s := openWire(t, f, 10)
	ctx := wireCtx(t)
	ch := oplog.UserChannel("wire", "alice")

	res, err := s.Append(ctx, ops(ch, 3))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if fmt.Sprint(resultIDs(res)) != "[1 2 3]" {
		t.Fatalf("ids %v, want [1 2 3]", resultIDs(res))
	}
	bs := f.batchReqs()
	if len(bs) != 1 {
		t.Fatalf("%d batches sent, want 1", len(bs))
	}
	if bs[0].stmts[0] != f.st.casInit {
		t.Errorf("first append to a fresh bucket: %q, want the IF max_id = null init", bs[0].stmts[0])
	}
	checkBatchShape(t, f.st, bs[0], 10, ch, 0, 0, 3)

	// 8 more cross the bucket boundary (bucket 0 holds 1..9): two LWTs,
	// each single-partition, the second initialising bucket 1.
	res, err = s.Append(ctx, ops(ch, 8))
	if err != nil {
		t.Fatalf("Append across buckets: %v", err)
	}
	if fmt.Sprint(resultIDs(res)) != "[4 5 6 7 8 9 10 11]" {
		t.Fatalf("ids %v, want 4..11", resultIDs(res))
	}
	bs = f.batchReqs()
	if len(bs) != 3 {
		t.Fatalf("%d batches sent in all, want 3 (one per bucket touched)", len(bs))
	}
	checkBatchShape(t, f.st, bs[1], 10, ch, 0, 3, 6)
	if bs[1].stmts[0] != f.st.casAdvance {
		t.Errorf("second batch: %q, want IF max_id = ?", bs[1].stmts[0])
	}
	checkBatchShape(t, f.st, bs[2], 10, ch, 1, 9, 2)
	if bs[2].stmts[0] != f.st.casInit {
		t.Errorf("new bucket's batch: %q, want the IF max_id = null init", bs[2].stmts[0])
	}

	// Reads walk both buckets and see everything, at LOCAL_QUORUM.
	got, maxID, err := s.Read(ctx, ch, 2, 100)
	if err != nil || maxID != 11 || len(got) != 9 || got[0].Id != 3 || got[8].Id != 11 || string(got[8].Payload) != "p7" {
		t.Fatalf("Read = %d ops (first %v), max %d, %v; want ids 3..11, max 11", len(got), got, maxID, err)
	}
	for _, r := range f.requests() {
		if !r.batch && r.consistency != primitive.ConsistencyLevelLocalQuorum {
			t.Errorf("read %q at %v, want LOCAL_QUORUM", r.stmts[0], r.consistency)
		}
	}
}

func TestWireCASFailureRetriesWithCurrent(t *testing.T) {
	f := newFakeCQL(t)
	s := openWire(t, f, 1000)
	ctx := wireCtx(t)
	ch := oplog.UserChannel("wire", "bob")
	two := int64(2)
	f.mu.Lock()
	f.part(ch, 0).maxID = &two // the store will read max_id 2
	f.mu.Unlock()
	f.mu.Lock() // the fake serves from other goroutines
	f.beforeBatch = func(n int, r wireReq) (message.Message, bool) {
		if n == 1 {
			// Another logic process appended 3..7 meanwhile.
			seven := int64(7)
			f.part(ch, 0).maxID = &seven
		}
		return nil, false
	}
	f.mu.Unlock()
	res, err := s.Append(ctx, ops(ch, 2))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if fmt.Sprint(resultIDs(res)) != "[8 9]" {
		t.Fatalf("ids %v, want [8 9] after a lost CAS against max_id 7", resultIDs(res))
	}
	bs := f.batchReqs()
	if len(bs) != 2 {
		t.Fatalf("%d batches, want 2 (lost CAS, then retry)", len(bs))
	}
	checkBatchShape(t, f.st, bs[0], 1000, ch, 0, 2, 2)
	checkBatchShape(t, f.st, bs[1], 1000, ch, 0, 7, 2)
}

func TestWireCASWriteTimeoutResolvedBySerialRead(t *testing.T) {
	casTimeout := &message.WriteTimeout{ErrorMessage: "scripted CAS timeout", Consistency: primitive.ConsistencyLevelSerial,
		Received: 0, BlockFor: 2, WriteType: primitive.WriteType("CAS")}

	t.Run("Applied", func(t *testing.T) {
		f := newFakeCQL(t)
		s := openWire(t, f, 1000)
		ch := oplog.UserChannel("wire", "carol")
		// The batch is applied, but the client hears a CAS write timeout.
		f.mu.Lock() // the fake serves from other goroutines
		f.beforeBatch = func(n int, r wireReq) (message.Message, bool) {
			if n == 1 {
				return casTimeout, true
			}
			return nil, false
		}
		f.mu.Unlock()
		res, err := s.Append(wireCtx(t), ops(ch, 3))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if fmt.Sprint(resultIDs(res)) != "[1 2 3]" {
			t.Fatalf("ids %v, want [1 2 3]", resultIDs(res))
		}
		if n := len(f.batchReqs()); n != 1 {
			t.Fatalf("%d batches sent, want 1: an applied batch must not be allocated again", n)
		}
		checkSerialResolution(t, f)
	})
	t.Run("NotApplied", func(t *testing.T) {
		f := newFakeCQL(t)
		s := openWire(t, f, 1000)
		ch := oplog.UserChannel("wire", "dave")
		f.mu.Lock() // the fake serves from other goroutines
		f.beforeBatch = func(n int, r wireReq) (message.Message, bool) {
			if n == 1 {
				return casTimeout, false // timed out before anything was accepted
			}
			return nil, false
		}
		f.mu.Unlock()
		res, err := s.Append(wireCtx(t), ops(ch, 2))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if fmt.Sprint(resultIDs(res)) != "[1 2]" {
			t.Fatalf("ids %v, want [1 2]", resultIDs(res))
		}
		bs := f.batchReqs()
		if len(bs) != 2 {
			t.Fatalf("%d batches, want 2: the retry only after the SERIAL read showed it was not applied", len(bs))
		}
		checkSerialResolution(t, f)
		// The serial read came between the two batches.
		reqs := f.requests()
		var order []string
		for _, r := range reqs {
			switch {
			case r.batch:
				order = append(order, "batch")
			case r.consistency == primitive.ConsistencyLevelLocalSerial:
				order = append(order, "serial")
			}
		}
		if fmt.Sprint(order) != "[batch serial batch]" {
			t.Errorf("request order %v, want [batch serial batch]", order)
		}
	})
	t.Run("Unresolvable", func(t *testing.T) {
		f := newFakeCQL(t)
		s := openWire(t, f, 1000)
		ch := oplog.UserChannel("wire", "erin")
		f.mu.Lock() // the fake serves from other goroutines
		f.failSerialReads = true
		f.beforeBatch = func(n int, r wireReq) (message.Message, bool) { return casTimeout, false }
		f.mu.Unlock()
		res, err := s.Append(wireCtx(t), ops(ch, 1))
		if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, store.ErrUnavailable) || res != nil {
			t.Fatalf("Append = %v, %v; want ErrUnknownOutcome wrapping ErrUnavailable", res, err)
		}
		// Neither the store nor a driver retry policy re-sent the batch.
		if n := len(f.batchReqs()); n != 1 {
			t.Fatalf("%d batches sent, want exactly 1", n)
		}
	})
}

// checkSerialResolution checks that a SERIAL-level read of the partition's
// max_id followed the timed-out batch.
func checkSerialResolution(t *testing.T, f *fakeCQL) {
	t.Helper()
	seenBatch := false
	for _, r := range f.requests() {
		if r.batch {
			seenBatch = true
			continue
		}
		if seenBatch && r.stmts[0] == f.st.selectHead {
			if r.consistency != primitive.ConsistencyLevelLocalSerial {
				t.Errorf("resolution read at %v, want LOCAL_SERIAL", r.consistency)
			}
			return
		}
	}
	t.Errorf("no serial read of max_id after the timed-out batch")
}

// TestWireGroupsConcurrentAppends: concurrent appends of one channel share
// LWT batches and get dense ids.
func TestWireGroupsConcurrentAppends(t *testing.T) {
	f := newFakeCQL(t)
	s := openWire(t, f, 10000)
	ch := oplog.GlobalChannel("wire")
	var wg sync.WaitGroup
	const callers = 20
	ids := make(chan uint64, callers)
	for range callers {
		wg.Go(func() {
			res, err := s.Append(wireCtx(t), ops(ch, 1))
			if err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			ids <- res[0].ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] || id < 1 || id > callers {
			t.Fatalf("id %d duplicated or outside 1..%d", id, callers)
		}
		seen[id] = true
	}
	if n := len(f.batchReqs()); n > callers {
		t.Errorf("%d batches for %d appends", n, callers)
	}
	t.Logf("%d concurrent single-op appends took %d LWT batches", callers, len(f.batchReqs()))
}

// headReads counts the head reads sent so far.
func (f *fakeCQL) headReads() int {
	n := 0
	for _, r := range f.requests() {
		if !r.batch && r.stmts[0] == f.st.selectHead {
			n++
		}
	}
	return n
}

// An append to an idle channel whose last commit here saw no other writer
// trusts the cached head (no read before its LWT); after another writer
// took ids, the stale head costs one lost round, and the channel's next
// appends read the head until a read finds it where we left it.
func TestWireCachedHead(t *testing.T) {
	f := newFakeCQL(t)
	s := openWire(t, f, 1000)
	ctx := wireCtx(t)
	ch := oplog.UserChannel("wire", "carol")
	appendIDs := func(want string) {
		t.Helper()
		res, err := s.Append(ctx, ops(ch, 1))
		if err != nil || fmt.Sprint(resultIDs(res)) != want {
			t.Fatalf("Append = %v, %v; want ids %s", resultIDs(res), err, want)
		}
	}
	appendIDs("[1]")
	if n := f.headReads(); n != 1 {
		t.Fatalf("%d head reads for the first append, want 1", n)
	}
	appendIDs("[2]")
	appendIDs("[3]")
	if n := f.headReads(); n != 1 {
		t.Fatalf("%d head reads after 3 appends by the only writer, want still 1", n)
	}
	f.mu.Lock()
	seven := int64(7) // another logic process appended 4..7
	f.part(ch, 0).maxID = &seven
	f.mu.Unlock()
	appendIDs("[8]") // lost round against the cached 3, retried with 7
	if bs := f.batchReqs(); len(bs) != 5 {
		t.Fatalf("%d batches, want 5 (3 applied, 1 lost, 1 retry)", len(bs))
	}
	f.mu.Lock()
	twelve := int64(12) // and 9..12 before our next append's head read
	f.part(ch, 0).maxID = &twelve
	f.mu.Unlock()
	appendIDs("[13]")
	if n := f.headReads(); n != 2 {
		t.Fatalf("%d head reads, want 2: after a lost round the head is read", n)
	}
	appendIDs("[14]") // the head had moved under the last read: read again
	if n := f.headReads(); n != 3 {
		t.Fatalf("%d head reads, want 3: a head that moved between our appends is not trusted", n)
	}
	appendIDs("[15]") // the last read found the head where we left it
	if n := f.headReads(); n != 3 {
		t.Fatalf("%d head reads, want still 3 once no other writer was seen", n)
	}
}
