// Package pushid sorts out the messages of a push that were pushed
// before, for the stores' idempotent Push (queue.Outboxes.Push): the
// bbolt and memory stores in package queue and the PostgreSQL store
// share it.
package pushid

import (
	"fmt"

	"github.com/wsreliable/wsreliable/protocol"
)

// Msg is one message of a push: its client and its message ID. New
// promises an ID made for this push, which cannot be a repeat.
type Msg struct {
	Client string
	ID     protocol.MessageID
	New    bool
}

// Lookup returns the client and sequence a store has recorded for id;
// found is false when it has none.
type Lookup func(id protocol.MessageID) (client string, seq uint64, found bool, err error)

// Sort sorts out which of msgs were pushed before: lookup names the
// client and sequence recorded for an ID, and a message may repeat the
// ID of an earlier one of the call. It returns fresh, the positions of
// the messages to push, ascending; seqs, holding the recorded sequences
// of the repeats; and sameAs, mapping a message that repeats one of the
// call to that one's position, whose sequence [Fill] gives it once
// assigned. An ID recorded, or repeated in the call, for another client
// fails with an error wrapping inUse. A zero or new ID is never a
// repeat, and never looked up.
func Sort(msgs []Msg, lookup Lookup, inUse error) (fresh []int, seqs []uint64, sameAs map[int]int, err error) {
	seqs = make([]uint64, len(msgs))
	fresh = make([]int, 0, len(msgs))
	var first map[protocol.MessageID]int // position of each ID's first fresh message
	for i, m := range msgs {
		if m.ID == (protocol.MessageID{}) || m.New {
			fresh = append(fresh, i)
			continue
		}
		client, seq, found, err := lookup(m.ID)
		if err != nil {
			return nil, nil, nil, err
		}
		if !found && len(msgs) > 1 {
			if first == nil {
				first = make(map[protocol.MessageID]int, len(msgs))
			}
			if j, ok := first[m.ID]; ok {
				client, found = msgs[j].Client, true
				if client == m.Client {
					if sameAs == nil {
						sameAs = make(map[int]int)
					}
					sameAs[i] = j
				}
			} else {
				first[m.ID] = i
			}
		}
		switch {
		case !found:
			fresh = append(fresh, i)
		case client != m.Client:
			return nil, nil, nil, fmt.Errorf("%w: message %s, pushed to client %q, not %q", inUse, m.ID, truncate(client), truncate(m.Client))
		default:
			seqs[i] = seq // 0 for a repeat within the call: set by Fill
		}
	}
	return fresh, seqs, sameAs, nil
}

// Fill gives the repeats within a call the sequence assigned to the
// message they repeat.
func Fill(seqs []uint64, sameAs map[int]int) {
	for i, j := range sameAs {
		seqs[i] = seqs[j]
	}
}

// truncate shortens a client ID for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Group is the messages of one push for one client.
type Group struct {
	Client string
	Idx    []int // their positions in the push, ascending
	Size   int64 // their sizes' sum
}

// GroupBy groups the messages of a push of n at positions fresh (nil:
// all) by client, in the order each client first appears; client and
// size describe the message at a position.
func GroupBy(n int, fresh []int, client func(i int) string, size func(i int) int64) []Group {
	if fresh == nil {
		fresh = make([]int, n)
		for i := range fresh {
			fresh[i] = i
		}
	}
	at := make(map[string]int, len(fresh))
	groups := make([]Group, 0, len(fresh))
	for _, i := range fresh {
		c := client(i)
		g, ok := at[c]
		if !ok {
			g = len(groups)
			at[c] = g
			groups = append(groups, Group{Client: c})
		}
		groups[g].Idx = append(groups[g].Idx, i)
		groups[g].Size += size(i)
	}
	return groups
}
