package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// pushAPI is serve's HTTP push API, enabled by -api-key-file:
//
//	POST /v1/push            queue one message for one or more clients,
//	                         named by address, or by client ID with "identity"
//	GET  /v1/messages/{id}   what became of a push
//
// Every request carries the key as "Authorization: Bearer KEY". Errors are
// answered as {"error":"..."} with Content-Type application/json. A pushAPI
// is safe for concurrent use.
type pushAPI struct {
	srv        *reliable.Server
	keySum     [sha256.Size]byte // of the key: compared in constant time, whatever the length
	maxPayload int
	maxBody    int64
	log        *slog.Logger
}

const (
	// maxPushPayload is the largest payload the push API takes: the
	// server's own limit for a message (ServerOptions.MaxMessageSize's
	// default), which a client reads with room to spare.
	maxPushPayload = 2 << 20
	// pushBodySlack is what a push request may hold beyond its payload's
	// base64 form: the JSON around it and the client IDs.
	pushBodySlack = 64 << 10
)

// newPushAPI returns the API over srv, taking payloads of up to
// maxPayload bytes; a request body is capped at their base64 size plus
// pushBodySlack.
func newPushAPI(srv *reliable.Server, key string, maxPayload int, log *slog.Logger) *pushAPI {
	return &pushAPI{
		srv:        srv,
		keySum:     sha256.Sum256([]byte(key)),
		maxPayload: maxPayload,
		maxBody:    int64(maxPayload+2)/3*4 + pushBodySlack,
		log:        log,
	}
}

// register mounts the API on mux; other paths under /v1/ answer 404
// (after authentication, so they reveal nothing).
func (a *pushAPI) register(mux *http.ServeMux) {
	mux.Handle("/v1/push", a.authorized(a.push))
	mux.Handle("/v1/messages/{id}", a.authorized(a.message))
	mux.Handle("/v1/clients", a.authorized(a.clients))
	mux.Handle("/v1/clients/{id}", a.authorized(a.client))
	mux.Handle("/v1/", a.authorized(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	}))
}

// authorized runs h for requests that carry the API key as a bearer
// token, and answers 401 to the others.
func (a *pushAPI) authorized(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimLeft(token, " ")))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], a.keySum[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsreliable"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API key (Authorization: Bearer KEY)")
			return
		}
		h(w, r)
	})
}

// pushRequest is the body of POST /v1/push. Pointers tell an absent field
// from an empty one.
type pushRequest struct {
	// Identity, when given, makes Client and Clients client IDs of that
	// identity; without it they are addresses (the "address" of serve's
	// lines; the client ID itself for a client without token or
	// certificate).
	Identity   *string   `json:"identity"`
	Client     *string   `json:"client"`
	Clients    *[]string `json:"clients"`
	Payload    *string   `json:"payload"`
	PayloadB64 *string   `json:"payload_b64"`
	TTL        *string   `json:"ttl"`
	// ID makes the push idempotent (reliable.OutgoingMessage.ID): with
	// client, it is the message's ID; with clients, each recipient's ID
	// is derived from it.
	ID *string `json:"id"`
}

// pushResponse is the answer to a successful push: one entry per
// recipient, in the request's order.
type pushResponse struct {
	Messages []pushedMessage `json:"messages"`
}

type pushedMessage struct {
	Client string `json:"client"`
	ID     string `json:"id"`
	Seq    uint64 `json:"seq"`
}

// push handles POST /v1/push: it queues the message for every recipient
// in one commit and answers 200 only once that commit is durable. Any
// other answer means nothing was queued.
func (a *pushAPI) push(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	clients, fanout, msg, err := a.decodePush(w, r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(msg.Payload) > a.maxPayload {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message too large: %d bytes, limit %d", len(msg.Payload), a.maxPayload))
		return
	}
	// Not cancelled with the request: a commit that began ends in a
	// definite answer, and the error paths below all mean "not queued".
	ctx := context.WithoutCancel(r.Context())
	var rs []*reliable.Receipt
	if fanout {
		rs, err = a.srv.SendMany(ctx, clients, msg)
	} else {
		var rc *reliable.Receipt
		if rc, err = a.srv.SendMessage(ctx, clients[0], msg); err == nil {
			rs = []*reliable.Receipt{rc}
		}
	}
	if err != nil {
		status, text := pushErrorStatus(err)
		if status == http.StatusInternalServerError {
			a.log.Error("push failed", "clients", len(clients), "error", err)
		} else {
			a.log.Debug("push refused", "clients", len(clients), "status", status, "error", err)
		}
		writeError(w, status, text)
		return
	}
	resp := pushResponse{Messages: make([]pushedMessage, len(rs))}
	for i, rc := range rs {
		resp.Messages[i] = pushedMessage{Client: clients[i], ID: rc.ID().String(), Seq: rc.Seq()}
	}
	writeJSON(w, http.StatusOK, resp)
}

// pushErrorStatus maps an error of Server.SendMany to an HTTP status and
// the text to answer with.
func pushErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, reliable.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, reliable.ErrQueueFull), errors.Is(err, reliable.ErrDiskFull), errors.Is(err, reliable.ErrStoreFull):
		return http.StatusInsufficientStorage, err.Error()
	case errors.Is(err, reliable.ErrClosed):
		return http.StatusServiceUnavailable, "server shutting down"
	case errors.Is(err, reliable.ErrInvalid):
		// decodePush refused every other invalid input: the message ID
		// was used for another client.
		return http.StatusConflict, err.Error()
	}
	return http.StatusInternalServerError, "internal error"
}

// decodePush reads and checks a push request: one JSON object with exactly
// one of client and clients (non-empty, no address twice; client IDs of
// identity when that is given, which are turned into addresses), exactly one of
// payload and payload_b64, an optional non-negative Go duration as
// ttl and an optional UUID as id. fanout is true for clients. Everything SendMany would refuse as bad input is refused here, so
// its remaining errors are the server's, not the caller's. A body over
// the limit yields an *http.MaxBytesError.
func (a *pushAPI) decodePush(w http.ResponseWriter, r *http.Request) ([]string, bool, reliable.OutgoingMessage, error) {
	var (
		req pushRequest
		msg reliable.OutgoingMessage
	)
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, false, msg, badJSON(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		return nil, false, msg, badJSON(err)
	}

	var (
		clients []string
		fanout  bool
	)
	switch {
	case (req.Client == nil) == (req.Clients == nil):
		return nil, false, msg, errors.New(`give exactly one of "client" and "clients"`)
	case req.Client != nil:
		clients = []string{*req.Client}
	default:
		fanout = true
		clients = *req.Clients
		if len(clients) == 0 {
			return nil, false, msg, errors.New(`"clients" is empty`)
		}
	}
	if req.Identity != nil {
		addrs := make([]string, len(clients))
		for i, c := range clients {
			if c == "" || strings.Contains(c, "/") {
				return nil, false, msg, fmt.Errorf("client ID %q is empty or contains '/' (with \"identity\", give client IDs, not addresses)", truncateID(c))
			}
			addrs[i] = reliable.Address(*req.Identity, c)
		}
		clients = addrs
	}
	seen := make(map[string]struct{}, len(clients))
	for _, c := range clients {
		if c == "" || len(c) > protocol.MaxClientIDLen {
			return nil, false, msg, fmt.Errorf("client address %q is empty or longer than %d bytes", truncateID(c), protocol.MaxClientIDLen)
		}
		if _, dup := seen[c]; dup {
			return nil, false, msg, fmt.Errorf("client ID %q appears twice", truncateID(c))
		}
		seen[c] = struct{}{}
	}

	switch {
	case (req.Payload == nil) == (req.PayloadB64 == nil):
		return nil, false, msg, errors.New(`give exactly one of "payload" and "payload_b64"`)
	case req.Payload != nil:
		msg.Payload = []byte(*req.Payload)
	default:
		p, err := base64.StdEncoding.DecodeString(*req.PayloadB64)
		if err != nil {
			return nil, false, msg, fmt.Errorf(`"payload_b64" is not standard base64: %v`, err)
		}
		msg.Payload = p
	}

	if req.TTL != nil {
		ttl, err := time.ParseDuration(*req.TTL)
		if err != nil || ttl < 0 {
			return nil, false, msg, fmt.Errorf(`"ttl" %q is not a non-negative Go duration such as "30s"`, *req.TTL)
		}
		msg.TTL = ttl
	}
	if req.ID != nil {
		id, err := uuid.Parse(*req.ID)
		if err != nil || id == (uuid.UUID{}) {
			return nil, false, msg, fmt.Errorf(`"id" %q is not a non-zero UUID`, *req.ID)
		}
		msg.ID = protocol.MessageID(id)
	}
	return clients, fanout, msg, nil
}

// badJSON explains a decoding error; a body over the limit stays an
// *http.MaxBytesError.
func badJSON(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return fmt.Errorf("request body is not a valid push: %v", err)
}

// truncateID shortens a client ID for an error message.
func truncateID(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// messageResponse is the answer to GET /v1/messages/{id}.
type messageResponse struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	Seq    uint64 `json:"seq"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// message handles GET /v1/messages/{id}: the push's client, sequence and
// status (pending, acked, rejected, expired or evicted).
func (a *pushAPI) message(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed message ID: want a UUID")
		return
	}
	st, err := a.pushStatus(protocol.MessageID(id))
	switch {
	case errors.Is(err, reliable.ErrUnknownMessage):
		writeError(w, http.StatusNotFound, "unknown message")
		return
	case errors.Is(err, reliable.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	case err != nil:
		a.log.Error("reading a message's status failed", "id", id.String(), "error", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeJSON(w, http.StatusOK, messageResponse{
		ID:     st.ID.String(),
		Client: st.ClientID,
		Seq:    st.Seq,
		Status: st.Status.String(),
		Reason: st.Reason,
	})
}

// pushStatus is the one call of the API into the server's status store,
// which keeps statuses across restarts for ServerOptions.StatusRetention
// (24 h) after they settle.
func (a *pushAPI) pushStatus(id protocol.MessageID) (reliable.PushStatus, error) {
	return a.srv.Status(id)
}

// errorBody is every error answer of the API.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(encodeLine(v))
}
