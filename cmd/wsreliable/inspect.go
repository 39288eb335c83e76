package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/wsreliable/wsreliable/queue"
)

// Store roles inspect tells apart.
const (
	roleClient = "client"
	roleServer = "server"
)

func runInspect(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", "-data DIR|FILE [-json] [-limit N] [-after CLIENT]", stderr)
	data := fs.String("data", "", "a `directory` given to send, recv or serve (its "+clientStoreName+" and "+serveStoreName+" are shown), or a store file")
	asJSON := fs.Bool("json", false, "print one JSON document instead of tables")
	limit := fs.Int("limit", 100, "list at most `N` clients of a server's store")
	after := fs.String("after", "", "list the clients whose IDs sort after `CLIENT` (the last of the previous page)")
	lockTimeout := fs.Duration("lock-timeout", 500*time.Millisecond, "how long to wait for a store file held by a running process")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch {
	case *data == "":
		return usageError(fs, "-data is required")
	case *lockTimeout <= 0:
		return usageError(fs, "-lock-timeout must be positive")
	case *limit <= 0:
		return usageError(fs, "-limit must be positive")
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wsreliable inspect: "+format+"\n", a...)
		return exitFail
	}
	fi, err := os.Stat(*data)
	if err != nil {
		return fail("%v", err)
	}
	var paths []string
	if fi.IsDir() {
		for _, name := range []string{clientStoreName, serveStoreName} {
			p := filepath.Join(*data, name)
			if _, err := os.Stat(p); err == nil {
				paths = append(paths, p)
			}
		}
		if len(paths) == 0 {
			return fail("no store in %s (looked for %s and %s)", *data, clientStoreName, serveStoreName)
		}
	} else {
		paths = []string{*data}
	}

	opts := &queue.InspectOptions{After: *after, Limit: *limit, LockTimeout: *lockTimeout}
	code := exitOK
	var doc inspectDoc
	for i, p := range paths {
		r, err := queue.InspectFile(p, opts)
		if err != nil {
			if errors.Is(err, queue.ErrLocked) {
				err = fmt.Errorf("%w; a running process (serve, send, recv) has it open: stop it first", err)
			}
			fail("%v", err)
			code = exitFail
			continue
		}
		s := newStoreDoc(p, r)
		if *asJSON {
			doc.Stores = append(doc.Stores, s)
			continue
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := s.writeTable(stdout, time.Now()); err != nil {
			return fail("%v", err)
		}
	}
	if *asJSON && len(doc.Stores) > 0 {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(&doc); err != nil {
			return fail("%v", err)
		}
	}
	return code
}

// inspectDoc is the document inspect -json prints. Its field names are
// part of the command's interface: add fields, never rename them.
type inspectDoc struct {
	Stores []storeDoc `json:"stores"`
}

// storeDoc is one store file. A server's store lists its clients; a
// client's store, its watermarks for the server's streams.
type storeDoc struct {
	Path          string      `json:"path"`
	Role          string      `json:"role"` // "client" or "server"
	FormatVersion uint64      `json:"format_version"`
	FileSize      int64       `json:"file_size"`
	ClientID      string      `json:"client_id"`
	Stream        string      `json:"stream"`
	Outbox        outboxDoc   `json:"outbox"`
	Settled       settledDoc  `json:"settled"`
	Outboxes      int         `json:"outboxes"`
	PushMessages  int64       `json:"push_messages"`
	PushBytes     int64       `json:"push_bytes"`
	Bindings      int         `json:"bindings"`
	WatermarkN    int         `json:"watermark_count"`
	Clients       []clientDoc `json:"clients,omitempty"`
	// NextAfter, when set, is the -after value of the next page of
	// clients.
	NextAfter string `json:"next_after,omitempty"`
	// Watermarks are a client store's watermarks by stream ID.
	Watermarks map[string]uint64 `json:"watermarks,omitempty"`
}

// outboxDoc is an outbox: the client outbox or a client's push outbox.
type outboxDoc struct {
	Stream   string    `json:"stream,omitempty"` // push outboxes only; "" if never pushed to
	Messages int       `json:"messages"`
	Bytes    int64     `json:"bytes"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Acked    uint64    `json:"acked"`
	Oldest   time.Time `json:"oldest,omitzero"` // push outboxes only: when the oldest held entry was pushed, UTC
}

type settledDoc struct {
	Pending    int `json:"pending"`
	Unreported int `json:"unreported"`
	Reported   int `json:"reported"`
}

// clientDoc is one client of a server's store.
type clientDoc struct {
	Client     string            `json:"client"`
	Identity   string            `json:"identity"`
	Push       outboxDoc         `json:"push"`
	Watermarks map[string]uint64 `json:"watermarks"` // by stream ID
}

// newStoreDoc describes r, read from path. A file is a server's store
// when it is named so or, under another name, when it holds push
// outboxes or bindings.
func newStoreDoc(path string, r *queue.Report) storeDoc {
	s := storeDoc{
		Path:          path,
		Role:          roleClient,
		FormatVersion: r.Version,
		FileSize:      r.Outbox.FileSize,
		ClientID:      r.Meta.ClientID,
		Stream:        r.Meta.Stream.String(),
		Outbox: outboxDoc{
			Messages: r.Outbox.Messages, Bytes: r.Outbox.Bytes,
			FirstSeq: r.Outbox.FirstSeq, LastSeq: r.Outbox.LastSeq, Acked: r.Outbox.Acked,
		},
		Settled:      settledDoc(r.Settled),
		Outboxes:     r.Outboxes,
		PushMessages: r.PushMessages,
		PushBytes:    r.PushBytes,
		Bindings:     r.Bindings,
		WatermarkN:   r.Watermarks,
	}
	switch filepath.Base(path) {
	case serveStoreName:
		s.Role = roleServer
	case clientStoreName:
	default:
		if r.Outboxes > 0 || r.Bindings > 0 {
			s.Role = roleServer
		}
	}
	if s.Role == roleClient {
		// A client keeps only the server's streams, under one peer name.
		for _, c := range r.Clients {
			for _, w := range c.Watermarks {
				if s.Watermarks == nil {
					s.Watermarks = make(map[string]uint64)
				}
				s.Watermarks[w.Stream.String()] = w.Seq
			}
		}
		return s
	}
	s.Clients = make([]clientDoc, 0, len(r.Clients))
	for _, c := range r.Clients {
		o := c.Outbox
		d := clientDoc{
			Client:   c.Client,
			Identity: c.Identity,
			Push: outboxDoc{
				Messages: o.Messages, Bytes: o.Bytes,
				FirstSeq: o.FirstSeq, LastSeq: o.LastSeq, Acked: o.Acked, Oldest: o.Oldest.UTC(),
			},
			Watermarks: make(map[string]uint64, len(c.Watermarks)),
		}
		if !o.Stream.IsZero() {
			d.Push.Stream = o.Stream.String()
		}
		for _, w := range c.Watermarks {
			d.Watermarks[w.Stream.String()] = w.Seq
		}
		s.Clients = append(s.Clients, d)
	}
	if r.More && len(r.Clients) > 0 {
		s.NextAfter = r.Clients[len(r.Clients)-1].Client
	}
	return s
}

// writeTable prints s for people; now dates the ages.
func (s *storeDoc) writeTable(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store:\t%s (%s, format %d)\n", s.Path, s.Role, s.FormatVersion)
	fmt.Fprintf(tw, "client id:\t%s\n", s.ClientID)
	fmt.Fprintf(tw, "stream:\t%s\n", s.Stream)
	if s.Role == roleClient {
		fmt.Fprintf(tw, "queued:\t%d messages, %d bytes\n", s.Outbox.Messages, s.Outbox.Bytes)
		fmt.Fprintf(tw, "first seq:\t%d\n", s.Outbox.FirstSeq)
		fmt.Fprintf(tw, "last seq:\t%d\n", s.Outbox.LastSeq)
		fmt.Fprintf(tw, "acked:\t%d\n", s.Outbox.Acked)
		fmt.Fprintf(tw, "watermark:\t%s\n", orDash(watermarkList(s.Watermarks, false)))
	} else {
		fmt.Fprintf(tw, "clients:\t%d pushed to (%d messages, %d bytes queued), %d bound, %d watermarks\n",
			s.Outboxes, s.PushMessages, s.PushBytes, s.Bindings, s.WatermarkN)
	}
	if st := s.Settled; st != (settledDoc{}) {
		fmt.Fprintf(tw, "settled:\t%d pending, %d unreported, %d reported\n", st.Pending, st.Unreported, st.Reported)
	}
	fmt.Fprintf(tw, "file size:\t%d bytes\n", s.FileSize)
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.Role == roleClient {
		return nil
	}
	if len(s.Clients) == 0 {
		_, err := fmt.Fprintln(w, "\nno clients")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tIDENTITY\tDEPTH\tBYTES\tOLDEST\tFIRST\tLAST\tWATERMARKS")
	for _, c := range s.Clients {
		p := c.Push
		age := "-"
		if !p.Oldest.IsZero() {
			age = max(now.Sub(p.Oldest), 0).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\n", display(c.Client), orDash(display(c.Identity)),
			p.Messages, p.Bytes, age, p.FirstSeq, p.LastSeq, orDash(watermarkList(c.Watermarks, true)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.NextAfter != "" {
		_, err := fmt.Fprintf(w, "more clients follow: -after %s\n", display(s.NextAfter))
		return err
	}
	return nil
}

// watermarkList formats watermarks as "stream:seq" in stream order,
// each stream cut to its first 8 characters when short is set.
func watermarkList(wm map[string]uint64, short bool) string {
	parts := make([]string, 0, len(wm))
	for stream, seq := range wm {
		if short && len(stream) > 8 {
			stream = stream[:8]
		}
		parts = append(parts, fmt.Sprintf("%s:%d", stream, seq))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// display is s for a table: quoted when it holds spaces or characters
// that are not printable, as a client ID sent by a peer may.
func display(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
