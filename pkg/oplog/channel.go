package oplog

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrBadChannel is returned by ParseChannel for a malformed channel name.
var ErrBadChannel = errors.New("oplog: bad channel")

// ErrBadName is returned for a biz, user or device name that cannot be used.
var ErrBadName = errors.New("oplog: bad name")

// Kind is whom a channel belongs to.
type Kind byte

const (
	KindUser   Kind = 'u'
	KindDevice Kind = 'd'
	KindGlobal Kind = 'g'
)

// MaxIDLen bounds user and device ids.
const MaxIDLen = 128

// UserChannel names the channel of biz for one user: "biz/u/user".
func UserChannel(biz, user string) string { return biz + "/u/" + user }

// DeviceChannel names the channel of biz for one device: "biz/d/device".
func DeviceChannel(biz, device string) string { return biz + "/d/" + device }

// GlobalChannel names the one channel of a global biz: "biz/g".
func GlobalChannel(biz string) string { return biz + "/g" }

// ParseChannel splits a channel name. Biz names contain no '/', so the owner
// (which may) is everything after the second '/'.
func ParseChannel(ch string) (biz string, kind Kind, owner string, err error) {
	i := strings.IndexByte(ch, '/')
	if i <= 0 || i+2 > len(ch) {
		return "", 0, "", fmt.Errorf("%w: %q", ErrBadChannel, ch)
	}
	biz, rest := ch[:i], ch[i+1:]
	switch {
	case rest == "g":
		return biz, KindGlobal, "", nil
	case len(rest) > 2 && (rest[0] == 'u' || rest[0] == 'd') && rest[1] == '/':
		return biz, Kind(rest[0]), rest[2:], nil
	}
	return "", 0, "", fmt.Errorf("%w: %q", ErrBadChannel, ch)
}

// ValidBizName reports whether s can name a biz: 1-64 of [A-Za-z0-9_.:-].
func ValidBizName(s string) error {
	if len(s) == 0 || len(s) > 64 {
		return fmt.Errorf("%w: biz %q: length must be 1-64", ErrBadName, s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.:-", r)) {
			return fmt.Errorf("%w: biz %q: only letters, digits and _.:- allowed", ErrBadName, s)
		}
	}
	return nil
}

// ValidID reports whether s can be a user or device id: 1-128 bytes of
// UTF-8 without control characters.
func ValidID(what, s string) error {
	if len(s) == 0 || len(s) > MaxIDLen {
		return fmt.Errorf("%w: %s %q: length must be 1-%d bytes", ErrBadName, what, s, MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s: not UTF-8", ErrBadName, what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %q: control character", ErrBadName, what, s)
		}
	}
	return nil
}
