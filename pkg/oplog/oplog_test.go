package oplog

import "testing"

func TestParseChannel(t *testing.T) {
	tests := []struct {
		ch    string
		biz   string
		kind  Kind
		owner string
		bad   bool
	}{
		{ch: UserChannel("demo", "alice"), biz: "demo", kind: KindUser, owner: "alice"},
		{ch: DeviceChannel("lock", "d/1"), biz: "lock", kind: KindDevice, owner: "d/1"},
		{ch: GlobalChannel("news"), biz: "news", kind: KindGlobal},
		{ch: "", bad: true},
		{ch: "demo", bad: true},
		{ch: "/u/x", bad: true},
		{ch: "demo/u/", bad: true},
		{ch: "demo/x/a", bad: true},
		{ch: "demo/g/extra", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.ch, func(t *testing.T) {
			biz, kind, owner, err := ParseChannel(tt.ch)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseChannel(%q) = %q %c %q, want error", tt.ch, biz, kind, owner)
				}
				return
			}
			if err != nil || biz != tt.biz || kind != tt.kind || owner != tt.owner {
				t.Fatalf("ParseChannel(%q) = %q %c %q %v", tt.ch, biz, kind, owner, err)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1", 0}, {"5.10.2", "5.9", 1}, {"5.9", "5.10", -1}, {"2", "10", -1}, {"1.2.3", "1.2.3", 0},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestEvaluate(t *testing.T) {
	now := int64(1_000_000)
	tests := []struct {
		name     string
		op       *Oplog
		platform string
		version  string
		want     Verdict
	}{
		{"plain", &Oplog{}, "ios", "1.0", Deliver},
		{"expired", &Oplog{ValidUntilMs: now - 1}, "ios", "1.0", Skip},
		{"not yet", &Oplog{ValidFromMs: now + 1}, "ios", "1.0", NotYet},
		{"filtered not yet is skip", &Oplog{ValidFromMs: now + 1, Platforms: []string{"android"}}, "ios", "1", Skip},
		{"platform match", &Oplog{Platforms: []string{"ios", "android"}}, "Android", "", Deliver},
		{"platform miss", &Oplog{Platforms: []string{"ios"}}, "web", "", Skip},
		{"version in range", &Oplog{MinVersion: "5.9", MaxVersion: "5.10"}, "ios", "5.10.0", Deliver},
		{"version below", &Oplog{MinVersion: "5.9"}, "ios", "5.8.9", Skip},
		{"version above", &Oplog{MaxVersion: "5.9"}, "ios", "5.10", Skip},
		{"no version reported", &Oplog{MinVersion: "1"}, "ios", "", Skip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Evaluate(tt.op, tt.platform, tt.version, now); got != tt.want {
				t.Fatalf("Evaluate = %v, want %v", got, tt.want)
			}
		})
	}
}
