package comet

import (
	"fmt"
	"testing"
)

// channelSet finds channels by scanning while small and by its index past
// smallChannelSet, keeps AUTH order and refuses a name twice either way.
func TestChannelSet(t *testing.T) {
	for _, n := range []int{1, smallChannelSet, smallChannelSet + 1, 256} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var cs channelSet
			for i := range n {
				name := fmt.Sprintf("biz/u/user-%d", i)
				if !cs.add(newChannel("biz", name, 0)) {
					t.Fatalf("add %s refused", name)
				}
				if cs.add(newChannel("biz", name, 0)) {
					t.Fatalf("add %s twice accepted", name)
				}
			}
			if len(cs.order) != n || (cs.index != nil) != (n > smallChannelSet) {
				t.Fatalf("%d channels, index %v", len(cs.order), cs.index != nil)
			}
			for i, ch := range cs.order {
				name := fmt.Sprintf("biz/u/user-%d", i)
				if ch.name != name || cs.get(name) != ch {
					t.Fatalf("order[%d] = %s, get(%s) = %v", i, ch.name, name, cs.get(name))
				}
			}
			if cs.get("biz/u/nobody") != nil {
				t.Fatal("get of an unknown channel")
			}
		})
	}
}
