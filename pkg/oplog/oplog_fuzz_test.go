package oplog

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseChannel: a channel that parses rebuilds to exactly itself with
// the package's constructors, and a failure is ErrBadChannel.
func FuzzParseChannel(f *testing.F) {
	for _, s := range []string{"chat/u/alice", "lock/d/dev/with/slash", "news/g", "x/u/", "/u/a", "a/g/", "a//b", "a/x/b", "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ch string) {
		biz, kind, owner, err := ParseChannel(ch)
		if err != nil {
			if !errors.Is(err, ErrBadChannel) || biz != "" || owner != "" {
				t.Fatalf("ParseChannel(%q) = %q, %q, %v", ch, biz, owner, err)
			}
			return
		}
		var back string
		switch kind {
		case KindUser:
			back = UserChannel(biz, owner)
		case KindDevice:
			back = DeviceChannel(biz, owner)
		case KindGlobal:
			back = GlobalChannel(biz)
			if owner != "" {
				t.Fatalf("global channel %q with owner %q", ch, owner)
			}
		default:
			t.Fatalf("ParseChannel(%q): kind %q", ch, kind)
		}
		if back != ch || biz == "" || strings.Contains(biz, "/") || (kind != KindGlobal && owner == "") {
			t.Fatalf("ParseChannel(%q) = %q, %c, %q: rebuilds to %q", ch, biz, kind, owner, back)
		}
	})
}

// FuzzValidID and FuzzValidBizName check the name rules against their
// documented grammar, written out independently.
func FuzzValidID(f *testing.F) {
	for _, s := range []string{"alice", "", strings.Repeat("a", MaxIDLen), strings.Repeat("a", MaxIDLen+1), "a\x00b", "a\x7f", "\xff", "日本", "chat:v1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) >= 1 && len(s) <= MaxIDLen && utf8.ValidString(s) &&
			!strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
		err := ValidID("user", s)
		if (err == nil) != want || (err != nil && !errors.Is(err, ErrBadName)) {
			t.Fatalf("ValidID(%q) = %v, want ok=%v", s, err, want)
		}
		want = len(s) >= 1 && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == ':' || r == '-')
		})
		err = ValidBizName(s)
		if (err == nil) != want || (err != nil && !errors.Is(err, ErrBadName)) {
			t.Fatalf("ValidBizName(%q) = %v, want ok=%v", s, err, want)
		}
	})
}

// FuzzVersions: CompareVersions is a total preorder (reflexive,
// antisymmetric, transitive), agrees with numeric order on single numbers,
// ignores trailing ".0"; ValidVersion accepts exactly dotted uint32 lists.
func FuzzVersions(f *testing.F) {
	f.Add("5.10.2", "5.9", "5.10")
	f.Add("1", "1.0.0", "")
	f.Add("x.1", "0.1", "18446744073709551616")
	f.Add("1..2", ".", "4294967296")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := CompareVersions(a, b), CompareVersions(b, a)
		if CompareVersions(a, a) != 0 || ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("Compare(%q, %q) = %d, reverse %d", a, b, ab, ba)
		}
		if bc := CompareVersions(b, c); ab <= 0 && bc <= 0 && CompareVersions(a, c) > 0 {
			t.Fatalf("not transitive: %q <= %q <= %q but %q > %q", a, b, c, a, c)
		}
		if CompareVersions(a+".0", a) != 0 {
			t.Fatalf("%q.0 differs from %q", a, a)
		}
		na, ea := strconv.ParseUint(a, 10, 64)
		nb, eb := strconv.ParseUint(b, 10, 64)
		if ea == nil && eb == nil {
			want := 0
			if na < nb {
				want = -1
			} else if na > nb {
				want = 1
			}
			if ab != want {
				t.Fatalf("Compare(%q, %q) = %d, want %d", a, b, ab, want)
			}
		}
		valid := a != ""
		for _, p := range strings.Split(a, ".") {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				valid = false
			}
		}
		if ValidVersion(a) != valid {
			t.Fatalf("ValidVersion(%q) = %v", a, !valid)
		}
	})
}

// FuzzEvaluate: a verdict never delivers what the filters refuse or what
// expired, and Deliver/NotYet only differ by valid_from.
func FuzzEvaluate(f *testing.F) {
	f.Add("ios", "1.2", "ios", "1.0", "2.0", int64(0), int64(0), int64(5))
	f.Add("web", "", "IOS", "", "", int64(10), int64(20), int64(15))
	f.Fuzz(func(t *testing.T, platform, ver, want, minV, maxV string, from, until, now int64) {
		op := &Oplog{MinVersion: minV, MaxVersion: maxV, ValidFromMs: from, ValidUntilMs: until}
		if want != "" {
			op.Platforms = []string{want}
		}
		v := Evaluate(op, platform, ver, now)
		m := Matches(op, platform, ver)
		expired := until > 0 && now > until
		switch {
		case v == Deliver && (!m || expired || (from > 0 && now < from)):
			t.Fatalf("delivered %v to %q %q at %d", op, platform, ver, now)
		case v == NotYet && (!m || expired || !(from > 0 && now < from)):
			t.Fatalf("not-yet for %v at %d", op, now)
		case v == Skip && m && !expired:
			t.Fatalf("skipped a matching, unexpired %v at %d", op, now)
		}
	})
}
