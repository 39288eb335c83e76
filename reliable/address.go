package reliable

import (
	"fmt"
	"strings"

	"github.com/wsreliable/wsreliable/protocol"
)

// Address returns the address of the client clientID of identity on a
// server: the key under which the server keeps that client's watermarks,
// binding and push outbox, and the value to pass to Server.Send (and
// SendMessage, SendMany, SendBatch, Client) to reach it. It is clientID
// itself for the empty identity (a server without
// ServerOptions.Authenticate), and otherwise the identity with '%' and
// '/' percent-encoded, a '/', then clientID. Client IDs never contain
// '/' (a server refuses them at the hello), so two (identity, client ID)
// pairs never share an address: one identity can neither take over nor
// resume another's client, whatever ID it presents.
//
// Message.Address and ClientInfo.Address carry the address already
// computed.
func Address(identity, clientID string) string {
	if identity == "" {
		return clientID
	}
	var b strings.Builder
	b.Grow(len(identity) + 1 + len(clientID))
	for i := 0; i < len(identity); i++ {
		switch c := identity[i]; c {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('/')
	b.WriteString(clientID)
	return b.String()
}

// splitAddress returns the identity and client ID of an address made by
// Address; an address without '/' is a client ID of the empty identity.
func splitAddress(addr string) (identity, clientID string) {
	esc, id, ok := strings.Cut(addr, "/")
	if !ok {
		return "", addr
	}
	var b strings.Builder
	for i := 0; i < len(esc); i++ {
		if esc[i] == '%' && i+2 < len(esc) {
			switch esc[i+1 : i+3] {
			case "25":
				b.WriteByte('%')
				i += 2
				continue
			case "2F":
				b.WriteByte('/')
				i += 2
				continue
			}
		}
		b.WriteByte(esc[i])
	}
	return b.String(), id
}

// checkClientAddress checks a hello's client ID and the address it makes
// with identity, and returns the address, or the fixed reason for which
// the hello is refused (with protocol.ClosePolicy).
func checkClientAddress(identity, clientID string) (addr, refused string) {
	if strings.Contains(clientID, "/") {
		return "", "client ID contains '/'"
	}
	addr = Address(identity, clientID)
	if len(addr) > protocol.MaxClientIDLen {
		return "", fmt.Sprintf("identity and client ID together are longer than %d bytes", protocol.MaxClientIDLen)
	}
	return addr, ""
}
