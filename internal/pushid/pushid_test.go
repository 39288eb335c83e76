package pushid

import (
	"errors"
	"reflect"
	"testing"

	"github.com/wsreliable/wsreliable/protocol"
)

var errInUse = errors.New("in use")

func id(b byte) protocol.MessageID { return protocol.MessageID{b} }

// TestSort: a recorded ID for the same client is a repeat with its
// sequence, one repeated within the call takes the first's; a recorded
// or repeated ID of another client fails; zero and new IDs are fresh
// and never looked up.
func TestSort(t *testing.T) {
	recorded := map[protocol.MessageID]struct {
		client string
		seq    uint64
	}{id(1): {"a", 7}, id(9): {"b", 3}}
	var asked []protocol.MessageID
	lookup := func(m protocol.MessageID) (string, uint64, bool, error) {
		asked = append(asked, m)
		r, ok := recorded[m]
		return r.client, r.seq, ok, nil
	}
	msgs := []Msg{
		{Client: "a", ID: id(1)},            // recorded: seq 7
		{Client: "a", ID: id(2)},            // fresh
		{Client: "a", ID: id(2)},            // repeats position 1
		{Client: "a"},                       // zero: fresh
		{Client: "a", ID: id(3), New: true}, // new: fresh, not looked up
	}
	fresh, seqs, sameAs, err := Sort(msgs, lookup, errInUse)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 3, 4}; !reflect.DeepEqual(fresh, want) {
		t.Errorf("fresh = %v, want %v", fresh, want)
	}
	if want := []uint64{7, 0, 0, 0, 0}; !reflect.DeepEqual(seqs, want) {
		t.Errorf("seqs = %v, want %v", seqs, want)
	}
	if want := map[int]int{2: 1}; !reflect.DeepEqual(sameAs, want) {
		t.Errorf("sameAs = %v, want %v", sameAs, want)
	}
	if want := []protocol.MessageID{id(1), id(2), id(2)}; !reflect.DeepEqual(asked, want) {
		t.Errorf("looked up %v, want %v (never a zero or new ID)", asked, want)
	}
	seqs[1] = 11
	Fill(seqs, sameAs)
	if seqs[2] != 11 {
		t.Errorf("Fill gave the repeat seq %d, want 11", seqs[2])
	}

	for name, msgs := range map[string][]Msg{
		"recorded for another client": {{Client: "a", ID: id(9)}},
		"repeated for another client": {{Client: "a", ID: id(4)}, {Client: "b", ID: id(4)}},
	} {
		if _, _, _, err := Sort(msgs, lookup, errInUse); !errors.Is(err, errInUse) {
			t.Errorf("%s: err = %v, want one wrapping errInUse", name, err)
		}
	}
}

// TestGroupBy: positions grouped by client in the order each client
// first appears, with their sizes summed.
func TestGroupBy(t *testing.T) {
	clients := []string{"b", "a", "b", "c", "a"}
	got := GroupBy(len(clients), []int{0, 1, 2, 4}, func(i int) string { return clients[i] }, func(i int) int64 { return int64(10 * (i + 1)) })
	want := []Group{{Client: "b", Idx: []int{0, 2}, Size: 40}, {Client: "a", Idx: []int{1, 4}, Size: 70}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GroupBy = %+v, want %+v", got, want)
	}
}
