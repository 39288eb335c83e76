package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// clientJSON is one client in the admin API's answers.
type clientJSON struct {
	Address      string  `json:"address"` // what POST /v1/push takes as "client"; the client ID without authentication
	Client       string  `json:"client"`
	Identity     string  `json:"identity"`
	Connected    bool    `json:"connected"`
	LastSeen     string  `json:"last_seen,omitempty"` // RFC 3339, while disconnected and seen since the start
	Watermark    uint64  `json:"watermark"`           // of its stream to the server, while connected
	PushStream   string  `json:"push_stream,omitempty"`
	OutboxDepth  int     `json:"outbox_depth"`
	OutboxBytes  int64   `json:"outbox_bytes"`
	FirstSeq     uint64  `json:"first_seq"`
	LastSeq      uint64  `json:"last_seq"`
	OldestAgeSec float64 `json:"oldest_age_seconds"` // 0 when the outbox is empty
}

func toClientJSON(c reliable.ClientInfo, now time.Time) clientJSON {
	j := clientJSON{
		Address: c.Address, Client: c.ClientID, Identity: c.Identity, Connected: c.Connected, Watermark: c.Watermark,
		OutboxDepth: c.Queued, OutboxBytes: c.Bytes, FirstSeq: c.FirstSeq, LastSeq: c.LastSeq,
	}
	if !c.LastSeen.IsZero() {
		j.LastSeen = c.LastSeen.UTC().Format(time.RFC3339Nano)
	}
	if !c.Stream.IsZero() {
		j.PushStream = c.Stream.String()
	}
	if !c.Oldest.IsZero() {
		j.OldestAgeSec = now.Sub(c.Oldest).Seconds()
	}
	return j
}

// clientsPage is the answer of GET /v1/clients.
type clientsPage struct {
	Clients []clientJSON `json:"clients"`
	// Next is the "after" value of the next page; empty on the last.
	Next string `json:"next,omitempty"`
}

// maxClientsPage bounds one page of GET /v1/clients.
const maxClientsPage = 1000

// clients handles GET /v1/clients?after=ADDRESS&limit=N: connected
// clients and those with queued pushes, in address order, a page at a
// time.
func (a *pushAPI) clients(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxClientsPage {
			writeError(w, http.StatusBadRequest, "limit must be 1 to "+strconv.Itoa(maxClientsPage))
			return
		}
		limit = n
	}
	list, err := a.srv.Clients(q.Get("after"), limit+1)
	if err != nil {
		a.log.Error("listing clients failed", "error", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	page := clientsPage{Clients: make([]clientJSON, 0, min(len(list), limit))}
	now := time.Now()
	for i, c := range list {
		if i == limit {
			page.Next = list[limit-1].Address
			break
		}
		page.Clients = append(page.Clients, toClientJSON(c, now))
	}
	writeJSON(w, http.StatusOK, page)
}

// client handles GET /v1/clients/{address} (the client ID without
// authentication; a "/" in an address is escaped as %2F in the path).
func (a *pushAPI) client(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	c, err := a.srv.Client(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad client ID")
		return
	}
	writeJSON(w, http.StatusOK, toClientJSON(c, time.Now()))
}

// getOnly answers 405 to anything but GET and HEAD, and reports whether
// the request may go on.
func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, http.StatusMethodNotAllowed, "use GET")
	return false
}
