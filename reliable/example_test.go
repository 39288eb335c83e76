package reliable_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsreliable/wsreliable/reliable"
)

// ExampleServer mounts a Server on a mux. Each message reaches the handler
// once and in order; returning nil acknowledges it.
func ExampleServer() {
	dir, _ := os.MkdirTemp("", "wsreliable-example")
	defer os.RemoveAll(dir)

	srv, err := reliable.NewServer(filepath.Join(dir, "server.db"),
		func(ctx context.Context, m *reliable.Message) error {
			fmt.Printf("%s\n", m.Payload)
			return nil
		}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	c, err := reliable.NewClient("ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", filepath.Join(dir, "client.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Send(ctx, []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: hello
}

// ExampleClient_Send queues a message durably, then waits for the server's
// acknowledgement. Send returns as soon as the message is on disk; the
// receipt settles when the server has handled it.
func ExampleClient_Send() {
	dir, _ := os.MkdirTemp("", "wsreliable-example")
	defer os.RemoveAll(dir)
	srv, err := reliable.NewServer(filepath.Join(dir, "server.db"),
		func(ctx context.Context, m *reliable.Message) error { return nil }, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	c, err := reliable.NewClient("ws"+strings.TrimPrefix(hs.URL, "http"), filepath.Join(dir, "client.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Send(ctx, []byte("temperature=21.5"))
	if err != nil {
		log.Fatal(err) // not queued: ErrQueueFull, ErrDiskFull, ErrTooLarge, ErrClosed …
	}
	fmt.Println("queued as seq", r.Seq())
	fmt.Println("acked:", r.Wait(ctx) == nil)
	// Output:
	// queued as seq 1
	// acked: true
}

// ExampleServerOptions_flush batches on both ends: the client queues many
// messages with one durable commit (SendBatch), and the handler buffers its
// output, made durable once per batch in Flush, which runs before the
// server commits and acknowledges.
func ExampleServerOptions_flush() {
	dir, _ := os.MkdirTemp("", "wsreliable-example")
	defer os.RemoveAll(dir)

	var out bufio.Writer // stands for a file, a pipe or a database transaction
	out.Reset(os.Stdout)
	srv, err := reliable.NewServer(filepath.Join(dir, "server.db"),
		func(ctx context.Context, m *reliable.Message) error {
			_, err := fmt.Fprintf(&out, "%s\n", m.Payload) // buffered, not yet durable
			return err
		}, &reliable.ServerOptions{
			Flush: func(ctx context.Context, clientID string) error {
				return out.Flush() // nothing is acknowledged before this returns nil
			},
		})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	c, err := reliable.NewClient("ws"+strings.TrimPrefix(hs.URL, "http"), filepath.Join(dir, "client.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := []reliable.OutgoingMessage{{Payload: []byte("a")}, {Payload: []byte("b")}, {Payload: []byte("c")}}
	if _, err := c.SendBatch(ctx, msgs); err != nil { // one fsync for all three
		log.Fatal(err)
	}
	if err := c.Drain(ctx); err != nil { // every message acknowledged
		log.Fatal(err)
	}
	// Output:
	// a
	// b
	// c
}

// ExampleServer_Send pushes a command to a device that is offline: it
// waits in the server's store and reaches the device's Handler once the
// device connects, once and in order, with no loss across restarts.
func ExampleServer_Send() {
	dir, _ := os.MkdirTemp("", "wsreliable-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	srv, err := reliable.NewServer(filepath.Join(dir, "server.db"),
		func(ctx context.Context, m *reliable.Message) error { return nil }, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	// Queued durably before the device has ever connected.
	r, err := srv.Send(ctx, "thermostat-7", []byte("set 21.5"))
	if err != nil {
		log.Fatal(err)
	}

	got := make(chan string, 1)
	c, err := reliable.NewClient("ws"+strings.TrimPrefix(hs.URL, "http"), filepath.Join(dir, "device.db"), &reliable.ClientOptions{
		ClientID: "thermostat-7",
		Handler: func(ctx context.Context, m *reliable.Message) error {
			got <- string(m.Payload)
			return nil // acknowledges; the server's receipt settles
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(<-got)
	if err := r.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("acknowledged")
	// Output:
	// set 21.5
	// acknowledged
}

// ExampleServer_SendMany notifies many clients in one durable commit: one
// fsync however many recipients, each copy with its own ID and receipt.
func ExampleServer_SendMany() {
	dir, _ := os.MkdirTemp("", "wsreliable-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	srv, err := reliable.NewServer(filepath.Join(dir, "server.db"),
		func(ctx context.Context, m *reliable.Message) error { return nil }, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	rs, err := srv.SendMany(ctx, []string{"phone-1", "phone-2", "phone-3"}, reliable.OutgoingMessage{
		Payload: []byte("sale ends tonight"),
		TTL:     time.Hour, // never delivered after an hour: settles as expired
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rs {
		fmt.Println("queued with seq", r.Seq())
	}
	// Output:
	// queued with seq 1
	// queued with seq 1
	// queued with seq 1
}

// ExampleAddress shows the addresses a server keeps clients under: the
// client ID itself without authentication, else the identity (with '%'
// and '/' escaped), a '/', and the client ID. Pass one to Server.Send to
// push to that client; Message.Address holds it for the sender of a
// message.
func ExampleAddress() {
	fmt.Println(reliable.Address("", "sensor-7"))
	fmt.Println(reliable.Address("alice", "phone"))
	fmt.Println(reliable.Address("spiffe://example.org/gw", "gw-1"))
	// Output:
	// sensor-7
	// alice/phone
	// spiffe:%2F%2Fexample.org%2Fgw/gw-1
}
