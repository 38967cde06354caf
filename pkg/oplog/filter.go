package oplog

import (
	"strconv"
	"strings"
)

// Verdict is what to do with one oplog for one device now.
type Verdict int

const (
	// Deliver: send it.
	Deliver Verdict = iota
	// Skip: never for this device (filtered or expired); advance past it.
	Skip
	// NotYet: valid_from is in the future; stop here and deliver it later.
	NotYet
)

// Evaluate decides delivery of op to a device with platform and appVersion at
// nowMs (unix milliseconds).
func Evaluate(op *Oplog, platform, appVersion string, nowMs int64) Verdict {
	if op.ValidUntilMs > 0 && nowMs > op.ValidUntilMs {
		return Skip
	}
	if !Matches(op, platform, appVersion) {
		return Skip
	}
	if op.ValidFromMs > 0 && nowMs < op.ValidFromMs {
		return NotYet
	}
	return Deliver
}

// Matches reports whether op's platform and version filters admit the device.
// A device that did not report a version matches no version-bounded oplog.
func Matches(op *Oplog, platform, appVersion string) bool {
	if len(op.Platforms) > 0 {
		ok := false
		for _, p := range op.Platforms {
			if strings.EqualFold(p, platform) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if op.MinVersion != "" && (appVersion == "" || CompareVersions(appVersion, op.MinVersion) < 0) {
		return false
	}
	if op.MaxVersion != "" && (appVersion == "" || CompareVersions(appVersion, op.MaxVersion) > 0) {
		return false
	}
	return true
}

// CompareVersions compares dotted numeric versions ("5.10.2" > "5.9"); missing
// parts count as 0 and a non-numeric part compares as 0.
func CompareVersions(a, b string) int {
	for a != "" || b != "" {
		var pa, pb string
		pa, a, _ = strings.Cut(a, ".")
		pb, b, _ = strings.Cut(b, ".")
		na, _ := strconv.ParseUint(pa, 10, 64)
		nb, _ := strconv.ParseUint(pb, 10, 64)
		if na != nb {
			if na < nb {
				return -1
			}
			return 1
		}
	}
	return 0
}

// ValidVersion reports whether v is dotted numeric ("1", "5.12.0").
func ValidVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, p := range strings.Split(v, ".") {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return false
		}
	}
	return true
}
