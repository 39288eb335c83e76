package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsreliable/wsreliable/internal/testkit"
)

// TestAdminClients: GET /v1/clients answers who is connected, what waits
// for whom and how old it is, in pages; it needs the API key.
func TestAdminClients(t *testing.T) {
	srv, c := startServeAPI(t)
	c.pushText(t, "b-offline", "one")
	c.pushText(t, "b-offline", "two")
	c.pushText(t, "a-online", "hi")
	r := startRecv(t, srv.url, filepath.Join(t.TempDir(), "a"), "a-online")
	waitReceived(t, r.stdout, 1)

	if resp, _ := c.do(t, http.MethodGet, "/v1/clients", "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/clients without the key: HTTP %d, want 401", resp.StatusCode)
	}
	var page clientsPage
	testkit.Eventually(t, 10*time.Second, func() bool {
		resp, b := c.do(t, http.MethodGet, "/v1/clients?limit=1", "Bearer "+testAPIKey, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/clients: HTTP %d %s", resp.StatusCode, b)
		}
		page = clientsPage{}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		return len(page.Clients) == 1 && page.Clients[0].Connected && page.Clients[0].OutboxDepth == 0
	}, "a-online not shown connected with an empty outbox: %+v", page)
	if page.Clients[0].Client != "a-online" || page.Next != "a-online" {
		t.Fatalf("first page %+v", page)
	}
	resp, b := c.do(t, http.MethodGet, "/v1/clients?limit=1&after="+page.Next, "Bearer "+testAPIKey, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("second page: HTTP %d %s", resp.StatusCode, b)
	}
	page = clientsPage{}
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	got := page.Clients
	if len(got) != 1 || got[0].Client != "b-offline" || got[0].Connected || got[0].OutboxDepth != 2 || got[0].OutboxBytes != 6 ||
		got[0].FirstSeq != 1 || got[0].LastSeq != 2 || got[0].OldestAgeSec <= 0 || page.Next != "" {
		t.Fatalf("second page %+v", page)
	}
	resp, b = c.do(t, http.MethodGet, "/v1/clients/b-offline", "Bearer "+testAPIKey, "")
	var one clientJSON
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &one) != nil || one.OutboxDepth != 2 {
		t.Fatalf("GET /v1/clients/b-offline: HTTP %d %s", resp.StatusCode, b)
	}
	if resp, _ := c.do(t, http.MethodGet, "/v1/clients?limit=0", "Bearer "+testAPIKey, ""); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("limit=0: HTTP %d, want 400", resp.StatusCode)
	}
}
