package main

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/wsreliable/wsreliable/protocol"
	"github.com/wsreliable/wsreliable/reliable"
)

// FuzzAppendDelivered: the hand-built lines of serve (appendDelivered) and
// recv (appendReceived) are byte for byte what encodeLine makes of the
// same message, for any client ID, identity and payload.
func FuzzAppendDelivered(f *testing.F) {
	for _, s := range []string{"", "hello", `quote " back \ slash`, "\x00\x01\b\f\n\r\t\x1f\x7f", "<&>", "é ü 漢字 😀", "\u2028\u2029", "\xff\xfe not utf-8", "a\xc3"} {
		f.Add("client-1", "", []byte(s), uint64(7))
		f.Add("client-1", "spiffe://example.org/"+s, []byte(s), uint64(7))
	}
	f.Fuzz(func(t *testing.T, client, identity string, payload []byte, seq uint64) {
		m := &reliable.Message{ClientID: client, Identity: identity, Address: reliable.Address(identity, client), ID: protocol.MessageID(uuid.New()), Seq: seq, Payload: payload}
		text, b64 := payloadFields(m.Payload)
		want := encodeLine(deliveredLine{Client: m.ClientID, Identity: m.Identity, Address: m.Address, ID: m.ID.String(), Seq: m.Seq, Payload: text, PayloadB64: b64})
		if got := appendDelivered(nil, m); !bytes.Equal(got, want) {
			t.Fatalf("serve: client %q identity %q payload %q:\n got %s\nwant %s", client, identity, payload, got, want)
		}
		want = encodeLine(receivedLine{ID: m.ID.String(), Seq: m.Seq, Payload: text, PayloadB64: b64})
		if got := appendReceived(nil, m); !bytes.Equal(got, want) {
			t.Fatalf("recv: payload %q:\n got %s\nwant %s", payload, got, want)
		}
	})
}
