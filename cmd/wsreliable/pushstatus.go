package main

import (
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// pushStatuses stands in for reliable.Server.Status until the library
// has it: what became of the pushes this process queued or saw settle,
// kept in memory. Unlike the store-backed Status it forgets everything on
// restart, and knows a push queued by an earlier run only once it
// settles. Once Server.Status exists, pushStatus calls it and this type,
// its OnSettled hook and the pushed call in pushAPI.push go.
//
// A pushStatuses is safe for concurrent use.
type pushStatuses struct {
	mu      sync.Mutex
	m       map[protocol.MessageID]reliable.PushStatus
	settled []protocol.MessageID // in settling order, for pruning
}

// statusKeep is how long a settled push's status is kept (the library's
// promise for Server.Status).
const statusKeep = 24 * time.Hour

func newPushStatuses() *pushStatuses {
	return &pushStatuses{m: make(map[protocol.MessageID]reliable.PushStatus)}
}

// pushed records the pushes of one SendMany as pending, unless one has
// already settled.
func (p *pushStatuses) pushed(clients []string, rs []*reliable.Receipt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range rs {
		if _, ok := p.m[r.ID()]; !ok {
			p.m[r.ID()] = reliable.PushStatus{ID: r.ID(), ClientID: clients[i], Seq: r.Seq(), Status: reliable.StatusPending}
		}
	}
}

// onSettled is the server's OnSettled hook: it records s and forgets
// statuses settled more than statusKeep ago.
func (p *pushStatuses) onSettled(s reliable.Settlement) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[s.ID] = reliable.PushStatus{ID: s.ID, ClientID: s.ClientID, Seq: s.Seq, Status: s.Status, Code: s.Code, Reason: s.Reason, Settled: now}
	p.settled = append(p.settled, s.ID)
	for len(p.settled) > 0 {
		old, ok := p.m[p.settled[0]]
		if ok && now.Sub(old.Settled) < statusKeep {
			break
		}
		if ok {
			delete(p.m, p.settled[0])
		}
		p.settled = p.settled[1:]
	}
}

// status returns what is known of id, or reliable.ErrUnknownMessage.
func (p *pushStatuses) status(id protocol.MessageID) (reliable.PushStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.m[id]
	if !ok {
		return reliable.PushStatus{}, reliable.ErrUnknownMessage
	}
	return st, nil
}
