package logic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacyrouter "github.com/getkin/kin-openapi/routers/legacy"

	"github.com/msync/msync/logic"
	"github.com/msync/msync/pkg/api/pb"
	"github.com/msync/msync/pkg/directory"
)

const openAPIFile = "../docs/openapi.yaml"

// apiCase is one request to the real server and the status it must get.
type apiCase struct {
	name         string
	method, path string
	key          string // API key; "" sends none
	body         string
	status       int
	// badRequest: the request itself breaks the schema on purpose (bad
	// JSON, unknown fields, an over-long id): it is not validated against
	// the file, only the answer is.
	badRequest bool
}

// TestOpenAPI checks docs/openapi.yaml against the real HTTP API: a real
// Logic (Pebble store, memory queue and directory) on 127.0.0.1. Each case's
// request must conform to the file (unless it is bad on purpose), its answer
// must have the expected status, and status, headers and body must conform
// to the file. Every documented status of every operation must be seen
// (500, a server bug, excepted); every route the handlers register must be
// documented and every documented one registered; the error codes in the
// file must be exactly the ones the code defines.
func TestOpenAPI(t *testing.T) {
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatalf("loading %s: %v", openAPIFile, err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("%s is not a valid OpenAPI 3 document: %v", openAPIFile, err)
	}

	e := newEnv(t, func(c *logic.Config) { c.MaxBodyBytes = 64 << 10; c.MaxPushPayload = 64 })
	doc.Servers = openapi3.Servers{{URL: e.base}}
	router, err := legacyrouter.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{} // "METHOD path status"

	// An online device for rooms, kick and online, and acked points for the
	// sync point and stats answers.
	if _, err := e.dir.Put(ctx, directory.Session{User: "alice", Device: "phone-1", Platform: "android",
		AppVersion: "5.12.1", Comet: "comet-1", Key: "k1", Since: e.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	e.publish(`{"biz":"chat","user":"alice","payload":"one"}`)
	e.publish(`{"biz":"chat","user":"alice","payload":"two"}`)
	if _, err := e.l.Ack(ctx, &pb.AckReq{Items: []*pb.AckItem{{Device: "phone-1", User: "alice", Channel: "chat/u/alice", Id: 1}}}); err != nil {
		t.Fatal(err)
	}

	long := strings.Repeat("x", 129)
	big := strings.Repeat("x", 70<<10)
	cases := []apiCase{
		{name: "publish", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi"}`, status: 200},
		{name: "publish every field", method: "POST", path: "/v1/sync", key: "all-key", status: 200,
			body: `{"biz":"chat","user":"alice","payload_base64":"aGk=","dedup_key":"d1","valid_from":"` +
				e.clk.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano) + `","ttl":"1.5d","filters":{"platforms":["iOS","android"],"min_version":"5.1","max_version":"6"}}`},
		{name: "publish duplicate", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi","dedup_key":"d1"}`, status: 200},
		{name: "publish valid_until", method: "POST", path: "/v1/sync", key: "chat-key", status: 200,
			body: `{"biz":"chat","user":"alice","payload":"x","valid_until":"` + e.clk.Now().Add(time.Hour).Format(time.RFC3339) + `"}`},
		{name: "publish device", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"lock","device":"phone-1","payload":""}`, status: 200},
		{name: "publish global", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"news","global":true,"payload":"n"}`, status: 200},
		{name: "publish non-persistent", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"ephemeral","user":"alice","payload":"p"}`, status: 200},
		{name: "publish no biz", method: "POST", path: "/v1/sync", key: "all-key", body: `{"user":"alice","payload":"hi"}`, status: 400, badRequest: true},
		{name: "publish bad JSON", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":`, status: 400, badRequest: true},
		{name: "publish unknown field", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi","prio":1}`, status: 400, badRequest: true},
		{name: "publish both payloads", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi","payload_base64":"aGk="}`, status: 400},
		{name: "publish ttl and valid_until", method: "POST", path: "/v1/sync", key: "all-key", status: 400,
			body: `{"biz":"chat","user":"alice","payload":"hi","ttl":"1h","valid_until":"` + e.clk.Now().Add(time.Hour).Format(time.RFC3339) + `"}`},
		{name: "publish bad valid_from", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi","valid_from":"tomorrow"}`, status: 400, badRequest: true},
		{name: "publish user on a device biz", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"lock","user":"alice","payload":"hi"}`, status: 400},
		{name: "publish dedup_key non-persistent", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"ephemeral","user":"alice","payload":"p","dedup_key":"k"}`, status: 400},
		{name: "publish no key", method: "POST", path: "/v1/sync", body: `{"biz":"chat","user":"alice","payload":"hi"}`, status: 401},
		{name: "publish unknown key", method: "POST", path: "/v1/sync", key: "nope", body: `{"biz":"chat","user":"alice","payload":"hi"}`, status: 401},
		{name: "publish key not allowed the biz", method: "POST", path: "/v1/sync", key: "chat-key", body: `{"biz":"lock","device":"phone-1","payload":"hi"}`, status: 403},
		{name: "publish unknown biz", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chta","user":"alice","payload":"hi"}`, status: 404},
		{name: "publish over max_payload", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"0123456789abcdefg"}`, status: 413},
		{name: "publish body over the limit", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"` + big + `"}`, status: 413},

		{name: "batch", method: "POST", path: "/v1/sync/batch", key: "chat-key", status: 200,
			body: `{"items":[{"biz":"chat","user":"alice","payload":"a"},{"biz":"lock","device":"d","payload":"b"},{"biz":"chta","user":"u","payload":"c"}]}`},
		{name: "batch with an undecodable item", method: "POST", path: "/v1/sync/batch", key: "all-key", status: 200, badRequest: true,
			body: `{"items":[{"biz":"chat","user":"alice","payload":"a"},{"biz":"chat","user":7}]}`},
		{name: "batch empty", method: "POST", path: "/v1/sync/batch", key: "all-key", body: `{"items":[]}`, status: 400, badRequest: true},
		{name: "batch over the limit", method: "POST", path: "/v1/sync/batch", key: "all-key", status: 400, // MaxBatch is 5 here
			body: `{"items":[` + strings.Repeat(`{"biz":"chat","user":"alice","payload":"a"},`, 5) + `{"biz":"chat","user":"alice","payload":"a"}]}`},
		{name: "batch no key", method: "POST", path: "/v1/sync/batch", body: `{"items":[]}`, status: 401, badRequest: true},
		{name: "batch body over the limit", method: "POST", path: "/v1/sync/batch", key: "all-key", body: `{"items":[{"biz":"chat","user":"alice","payload":"` + big + `"}]}`, status: 413},

		{name: "device sync", method: "GET", path: "/v1/devices/phone-1/sync", key: "chat-key", status: 200},
		{name: "device sync bad id", method: "GET", path: "/v1/devices/" + long + "/sync", key: "chat-key", status: 400, badRequest: true},
		{name: "device sync no key", method: "GET", path: "/v1/devices/phone-1/sync", status: 401},

		{name: "bizs", method: "GET", path: "/v1/bizs", key: "chat-key", status: 200},
		{name: "bizs no key", method: "GET", path: "/v1/bizs", status: 401},

		{name: "push user", method: "POST", path: "/v1/push", key: "all-key", body: `{"user":"alice","payload":"typing"}`, status: 200},
		{name: "push room", method: "POST", path: "/v1/push", key: "all-key", body: `{"room":"lobby","payload_base64":"AAE="}`, status: 200},
		{name: "push all", method: "POST", path: "/v1/push", key: "all-key", body: `{"all":true,"payload":"x"}`, status: 200},
		{name: "push two targets", method: "POST", path: "/v1/push", key: "all-key", body: `{"user":"alice","device":"phone-1","payload":"x"}`, status: 400},
		{name: "push no key", method: "POST", path: "/v1/push", body: `{"user":"alice","payload":"x"}`, status: 401},
		{name: "push key not allowed every biz", method: "POST", path: "/v1/push", key: "chat-key", body: `{"user":"alice","payload":"x"}`, status: 403},
		{name: "push over the push limit", method: "POST", path: "/v1/push", key: "all-key", body: `{"user":"alice","payload":"` + strings.Repeat("x", 65) + `"}`, status: 413},

		{name: "rooms", method: "POST", path: "/v1/rooms", key: "all-key", body: `{"device":"phone-1","join":["lobby"],"leave":[]}`, status: 200},
		{name: "rooms none", method: "POST", path: "/v1/rooms", key: "all-key", body: `{"device":"phone-1"}`, status: 400},
		{name: "rooms no key", method: "POST", path: "/v1/rooms", body: `{"device":"phone-1","join":["a"]}`, status: 401},
		{name: "rooms key not allowed every biz", method: "POST", path: "/v1/rooms", key: "chat-key", body: `{"device":"phone-1","join":["a"]}`, status: 403},
		{name: "rooms offline", method: "POST", path: "/v1/rooms", key: "all-key", body: `{"device":"tablet","join":["a"]}`, status: 404},

		{name: "kick", method: "POST", path: "/v1/kick", key: "all-key", body: `{"device":"phone-1","reason":"logged out"}`, status: 200},
		{name: "kick long reason", method: "POST", path: "/v1/kick", key: "all-key", body: `{"device":"phone-1","reason":"` + strings.Repeat("r", 257) + `"}`, status: 400, badRequest: true},
		{name: "kick no key", method: "POST", path: "/v1/kick", body: `{"device":"phone-1"}`, status: 401},
		{name: "revoke tokens", method: "POST", path: "/v1/users/carol/revoke_tokens", key: "all-key", body: `{}`, status: 200},
		{name: "revoke tokens bad before", method: "POST", path: "/v1/users/carol/revoke_tokens", key: "all-key", body: `{"before":"yesterday"}`, status: 400, badRequest: true},
		{name: "revoke tokens no key", method: "POST", path: "/v1/users/carol/revoke_tokens", body: `{}`, status: 401},
		{name: "revoke tokens key not allowed every biz", method: "POST", path: "/v1/users/carol/revoke_tokens", key: "chat-key", body: `{}`, status: 403},
		{name: "kick key not allowed every biz", method: "POST", path: "/v1/kick", key: "chat-key", body: `{"device":"phone-1"}`, status: 403},
		{name: "kick offline", method: "POST", path: "/v1/kick", key: "all-key", body: `{"device":"tablet"}`, status: 404},

		{name: "online", method: "GET", path: "/v1/online?user=alice", key: "all-key", status: 200},
		{name: "online nobody", method: "GET", path: "/v1/online?user=bob", key: "all-key", status: 200},
		{name: "online no user", method: "GET", path: "/v1/online", key: "all-key", status: 400, badRequest: true},
		{name: "online no key", method: "GET", path: "/v1/online?user=alice", status: 401},
		{name: "online key not allowed every biz", method: "GET", path: "/v1/online?user=alice", key: "chat-key", status: 403},

		{name: "stats user", method: "GET", path: "/v1/stats?user=alice", key: "all-key", status: 200},
		{name: "stats device", method: "GET", path: "/v1/stats?device=phone-1", key: "all-key", status: 200},
		{name: "stats both", method: "GET", path: "/v1/stats?user=alice&device=phone-1", key: "all-key", status: 400},
		{name: "stats no key", method: "GET", path: "/v1/stats?user=alice", status: 401},
		{name: "stats key not allowed every biz", method: "GET", path: "/v1/stats?user=alice", key: "chat-key", status: 403},

		{name: "receipts", method: "GET", path: "/v1/receipts?channel=chat/u/alice&id=1", key: "chat-key", status: 200},
		{name: "receipts by user", method: "GET", path: "/v1/receipts?biz=chat&user=alice&id=2&limit=10", key: "all-key", status: 200},
		{name: "receipts no id", method: "GET", path: "/v1/receipts?channel=chat/u/alice", key: "all-key", status: 400, badRequest: true},
		{name: "receipts malformed channel", method: "GET", path: "/v1/receipts?channel=chat&id=1", key: "all-key", status: 400},
		{name: "receipts no key", method: "GET", path: "/v1/receipts?channel=chat/u/alice&id=1", status: 401},
		{name: "receipts key not allowed the biz", method: "GET", path: "/v1/receipts?channel=lock/d/phone-1&id=1", key: "chat-key", status: 403},
		{name: "receipts unknown biz", method: "GET", path: "/v1/receipts?channel=chta/u/alice&id=1", key: "all-key", status: 404},
		{name: "receipts past the end", method: "GET", path: "/v1/receipts?channel=chat/u/alice&id=1000", key: "all-key", status: 404},

		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
	}
	for _, c := range cases {
		checkCase(t, router, e.base, c, seen)
	}

	// Failing dependencies: 503 with nothing done.
	e.st.fail.Store(true)
	for _, c := range []apiCase{
		{name: "publish store down", method: "POST", path: "/v1/sync", key: "all-key", body: `{"biz":"chat","user":"alice","payload":"hi"}`, status: 503},
		{name: "batch store down", method: "POST", path: "/v1/sync/batch", key: "all-key", body: `{"items":[{"biz":"chat","user":"alice","payload":"a"}]}`, status: 503},
		{name: "device sync store down", method: "GET", path: "/v1/devices/phone-1/sync", key: "all-key", status: 503},
		{name: "stats store down", method: "GET", path: "/v1/stats?device=phone-1", key: "all-key", status: 503},
		{name: "receipts store down", method: "GET", path: "/v1/receipts?channel=chat/u/alice&id=1", key: "all-key", status: 503},
	} {
		checkCase(t, router, e.base, c, seen)
	}
	e.st.fail.Store(false)
	e.q.fail.Store(true)
	for _, c := range []apiCase{
		{name: "push queue down", method: "POST", path: "/v1/push", key: "all-key", body: `{"user":"alice","payload":"x"}`, status: 503},
		{name: "rooms queue down", method: "POST", path: "/v1/rooms", key: "all-key", body: `{"device":"phone-1","join":["a"]}`, status: 503},
		{name: "kick queue down", method: "POST", path: "/v1/kick", key: "all-key", body: `{"device":"phone-1"}`, status: 503},
	} {
		checkCase(t, router, e.base, c, seen)
	}
	e.q.fail.Store(false)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.dir.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	checkCase(t, router, e.base, apiCase{name: "online directory down", method: "GET", path: "/v1/online?user=alice", key: "all-key", status: 503}, seen)

	// /healthz answers 503 once Shutdown began; the listener is closed by
	// then, so ask the same handler directly.
	http.DefaultClient.CloseIdleConnections()
	if err := e.l.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", e.base+"/healthz", nil)
	rec := httptest.NewRecorder()
	e.l.Handler().ServeHTTP(rec, req)
	checkResponse(t, router, apiCase{name: "healthz shutting down", method: "GET", path: "/healthz", status: 503}, req, rec.Result(), seen)

	// Every documented status of every operation was seen.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status := range op.Responses.Map() {
				if status == "500" { // a server bug: cannot be provoked from outside
					continue
				}
				if k := method + " " + path + " " + status; !seen[k] {
					t.Errorf("%s is documented but no case produced it", k)
				}
			}
		}
	}
	checkRoutes(t, doc)
	checkErrorCodes(t, doc)
}

// TestOpenAPIOtherMethodsAndPaths checks what the document says in prose for
// requests outside its operations: another method on a known path is a 405
// with Allow, an unknown path a 404; both with the Error body.
func TestOpenAPIOtherMethodsAndPaths(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	errSchema := doc.Components.Schemas["Error"].Value
	e := newEnv(t, nil)
	for _, c := range []struct {
		method, path, allow, code string
		status                    int
	}{
		{"PUT", "/v1/sync", "POST", "method_not_allowed", 405},
		{"GET", "/v1/sync/batch", "POST", "method_not_allowed", 405},
		{"DELETE", "/v1/devices/phone-1/sync", "GET", "method_not_allowed", 405},
		{"POST", "/v1/online", "GET", "method_not_allowed", 405},
		{"GET", "/v1/kick", "POST", "method_not_allowed", 405},
		{"GET", "/v1/nope", "", "not_found", 404},
	} {
		req, err := http.NewRequest(c.method, e.base+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer all-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var body any
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("%s %s: answer %q is not JSON: %v", c.method, c.path, raw, err)
			continue
		}
		if resp.StatusCode != c.status || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), c.status, c.allow)
		}
		if err := errSchema.VisitJSON(body); err != nil {
			t.Errorf("%s %s: answer %s is not an Error: %v", c.method, c.path, raw, err)
		}
		if got := errCode(body.(map[string]any)); got != c.code {
			t.Errorf("%s %s: code %q, want %q", c.method, c.path, got, c.code)
		}
	}
}

// checkCase sends c to the server at base and checks it and its answer.
func checkCase(t *testing.T, router routers.Router, base string, c apiCase, seen map[string]bool) {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	// Validate a copy: validation reads the body.
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(strings.NewReader(c.body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer resp.Body.Close()
	checkResponse(t, router, c, vreq, resp, seen)
}

// checkResponse validates c's request (unless bad on purpose) and resp
// against the document and records the status as seen.
func checkResponse(t *testing.T, router routers.Router, c apiCase, req *http.Request, resp *http.Response, seen map[string]bool) {
	t.Helper()
	ctx := context.Background()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the answer: %v", c.name, err)
	}
	if resp.StatusCode != c.status {
		t.Errorf("%s: %s %s answered %d %s, want %d", c.name, c.method, c.path, resp.StatusCode, body, c.status)
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Errorf("%s: %s %s is not in %s: %v", c.name, c.method, c.path, openAPIFile, err)
		return
	}
	seen[c.method+" "+route.Path+" "+strconv.Itoa(resp.StatusCode)] = true
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if !c.badRequest {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			t.Errorf("%s: the request does not conform to %s: %v", c.name, openAPIFile, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("%s: the answer %d %s does not conform to %s: %v", c.name, resp.StatusCode, bytes.TrimSpace(body), openAPIFile, err)
	}
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", c.name)
	}
}

// logicSources parses the package's non-test Go files.
func logicSources(t *testing.T) []*ast.File {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		src, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, n, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// checkRoutes compares the method-qualified patterns the handlers register
// (string literals passed to route(...) or mux.Handle(...) in the package's
// code) with the operations of the document, both ways. The method-less
// patterns are the JSON 405 and 404 answers of the same paths.
func checkRoutes(t *testing.T, doc *openapi3.T) {
	var registered []string
	for _, f := range logicSources(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				if fn.Name != "route" {
					return true
				}
			case *ast.SelectorExpr:
				if fn.Sel.Name != "Handle" && fn.Sel.Name != "HandleFunc" {
					return true
				}
			default:
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			p, err := strconv.Unquote(lit.Value)
			if err == nil && strings.Contains(p, " /") {
				registered = append(registered, p)
			}
			return true
		})
	}
	if len(registered) < 10 {
		t.Fatalf("found only %d routes in the package's code (%v): the scan no longer matches how routes are registered", len(registered), registered)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	sort.Strings(registered)
	sort.Strings(documented)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("the server registers %q but %s does not document it", r, openAPIFile)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("%s documents %q but the server does not register it", openAPIFile, d)
		}
	}
}

// checkErrorCodes compares the ErrorCode enum with the package's Code*
// string constants (the "code" of error bodies), both ways.
func checkErrorCodes(t *testing.T, doc *openapi3.T) {
	var defined []string
	for _, f := range logicSources(t) {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						defined = append(defined, v)
					}
				}
			}
		}
	}
	ref := doc.Components.Schemas["ErrorCode"]
	if ref == nil || ref.Value == nil {
		t.Fatalf("%s has no ErrorCode schema", openAPIFile)
	}
	var documented []string
	for _, v := range ref.Value.Enum {
		documented = append(documented, v.(string))
	}
	sort.Strings(defined)
	sort.Strings(documented)
	if !slices.Equal(defined, documented) {
		t.Errorf("error codes: the code defines %v, %s documents %v", defined, openAPIFile, documented)
	}
}
