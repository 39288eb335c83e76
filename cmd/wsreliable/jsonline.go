package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/wsreliable/wsreliable/reliable"
)

// appendDelivered appends serve's line for m to dst: the JSON encoding of
// deliveredLine, as encodeLine would produce it, built without reflection
// or allocation.
func appendDelivered(dst []byte, m *reliable.Message) []byte {
	dst = append(dst, `{"client":`...)
	dst = appendJSONString(dst, m.ClientID)
	dst = append(dst, `,"identity":`...)
	dst = appendJSONString(dst, m.Identity)
	dst = append(dst, `,"address":`...)
	dst = appendJSONString(dst, m.Address)
	dst = append(dst, `,"id":"`...)
	dst = appendUUID(dst, m.ID)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = appendPayload(dst, m.Payload)
	return append(dst, "}\n"...)
}

// appendReceived appends recv's line for m to dst: the JSON encoding of
// receivedLine, as encodeLine would produce it.
func appendReceived(dst []byte, m *reliable.Message) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendUUID(dst, m.ID)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = appendPayload(dst, m.Payload)
	return append(dst, "}\n"...)
}

// appendPayload appends the payload field as payloadFields chooses it:
// ,"payload":"text" for valid UTF-8, else ,"payload_b64":"base64".
func appendPayload(dst, p []byte) []byte {
	if utf8.Valid(p) {
		dst = append(dst, `,"payload":`...)
		return appendJSONString(dst, p)
	}
	dst = append(dst, `,"payload_b64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, p)
	return append(dst, '"')
}

// appendUUID appends id in its canonical 36-character form.
func appendUUID(dst []byte, id [16]byte) []byte {
	const hex = "0123456789abcdef"
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[b>>4], hex[b&0xf])
	}
	return dst
}

// appendJSONString appends s as a JSON string the way encoding/json does
// with HTML escaping off: quotes, backslashes and control characters
// escaped (\b \f \n \r \t by name), U+2028 and U+2029 as \u escapes, and
// each byte of invalid UTF-8 as \ufffd.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// payloadFields returns the payload as a JSON string if it is valid UTF-8,
// else as standard base64 for the payload_b64 field.
func payloadFields(p []byte) (text *string, b64 string) {
	if utf8.Valid(p) {
		s := string(p)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(p)
}

// encodeLine returns v as one line of JSON, newline included, without
// HTML escaping.
func encodeLine(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only this package's line and answer types, made of strings,
		// numbers and slices of them: cannot fail.
		panic(fmt.Sprintf("wsreliable: encoding %T: %v", v, err))
	}
	return b.Bytes()
}
