package biz

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseDuration: ParseDuration agrees with time.ParseDuration on Go
// durations, and a "<n>d" value is n days: never NaN, infinite, wrapped
// around int64 or of the wrong sign.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "36h", "1.5d", "-1d", "0d", "d", "NaNd", "Infd", "1e300d", "106751d", "106752d", "0x10d", "1_0d", "30m", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		n, isDays := strings.CutSuffix(s, "d")
		if !isDays {
			want, werr := time.ParseDuration(s)
			if (err == nil) != (werr == nil) || d != want {
				t.Fatalf("ParseDuration(%q) = %v, %v; time.ParseDuration: %v, %v", s, d, err, want, werr)
			}
			return
		}
		if err != nil {
			return
		}
		days, perr := strconv.ParseFloat(n, 64)
		if perr != nil {
			t.Fatalf("ParseDuration(%q) = %v but %q is no number", s, d, n)
		}
		want := days * float64(24*time.Hour)
		if math.IsNaN(want) || math.IsInf(want, 0) || want >= math.MaxInt64 || want <= math.MinInt64 {
			t.Fatalf("ParseDuration(%q) = %v for an out-of-range %v days", s, d, days)
		}
		if diff := math.Abs(float64(d) - want); diff > 1+math.Abs(want)*1e-12 {
			t.Fatalf("ParseDuration(%q) = %v, want %v days", s, d, days)
		}
	})
}

// FuzzParseSpec: Parse either rejects a spec with ErrInvalid or returns a
// biz whose settings are within the documented bounds.
func FuzzParseSpec(f *testing.F) {
	f.Add("chat", "user", "appointed", "7d", "all", 0)
	f.Add("lock", "device", "global", "31d", "latest:3", 1<<20)
	f.Add("x", "", "", "-1h", "latest:-1", -1)
	f.Add("news", "user", "global", "NaNd", "latest:0", 65536)
	f.Fuzz(func(t *testing.T, name, target, scope, ttl, backlog string, maxPayload int) {
		b, err := Parse(Spec{Name: name, Target: target, Scope: scope, TTL: ttl, Backlog: backlog, MaxPayload: maxPayload})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %v is not ErrInvalid", err)
			}
			return
		}
		if b.TTL <= 0 || b.TTL > MaxTTL || b.MaxPayload <= 0 || b.LatestN < 0 {
			t.Fatalf("Parse accepted %+v", b)
		}
	})
}
