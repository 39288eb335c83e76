package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"
)

// tokenEntry is one line of serve's -tokens-file: the identity a bearer
// token stands for.
type tokenEntry struct {
	identity, token string
}

// parseTokens parses a tokens file: one "IDENTITY TOKEN" per line, the two
// fields separated by white space; blank lines and lines whose first
// non-blank character is '#' are ignored. A line with another number of
// fields, a field holding a control character, or a token already given
// on an earlier line is an error naming the line; errors never quote a
// token. One identity may have several tokens (to rotate them).
func parseTokens(data []byte) ([]tokenEntry, error) {
	var entries []tokenEntry
	seen := make(map[string]int) // token -> line number
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"IDENTITY TOKEN\", found %d fields", n, len(f))
		}
		if strings.ContainsFunc(f[0]+f[1], unicode.IsControl) {
			return nil, fmt.Errorf("line %d: control character", n)
		}
		if prev, dup := seen[f[1]]; dup {
			return nil, fmt.Errorf("line %d: duplicate token (also on line %d)", n, prev)
		}
		seen[f[1]] = n
		entries = append(entries, tokenEntry{identity: f[0], token: f[1]})
	}
	return entries, nil
}

// formatTokens is the inverse of parseTokens.
func formatTokens(entries []tokenEntry) []byte {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.identity + " " + e.token + "\n")
	}
	return []byte(b.String())
}

// tokenSet maps bearer tokens to identities. It holds only the tokens'
// SHA-256 sums and is immutable, so safe for concurrent use; serve swaps
// in a new one on SIGHUP.
type tokenSet struct {
	sums       [][sha256.Size]byte
	identities []string
}

// loadTokens reads and parses the tokens file at path; a file without any
// token is an error.
func loadTokens(path string) (*tokenSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	entries, err := parseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	s := &tokenSet{}
	for _, e := range entries {
		s.sums = append(s.sums, sha256.Sum256([]byte(e.token)))
		s.identities = append(s.identities, e.identity)
	}
	return s, nil
}

// lookup returns the identity of token. It compares the token's sum with
// every entry's in constant time and does not stop at a match, so the time
// it takes says nothing about which token, or how much of one, matched.
func (s *tokenSet) lookup(token string) (identity string, ok bool) {
	if token == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range s.sums {
		found = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(sum[:], s.sums[i][:]), i, found)
	}
	if found < 0 {
		return "", false
	}
	return s.identities[found], true
}

// bearerToken returns the token of an "Authorization: Bearer TOKEN"
// header (the scheme in any case), or "".
func bearerToken(authorization string) string {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// readTokenFile returns the bearer token in path, surrounding white space
// trimmed. An empty token, or one with white space or a control character
// inside, is an error; errors never quote the token.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	switch {
	case s == "":
		return "", fmt.Errorf("%s is empty", path)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "", fmt.Errorf("%s: %w", path, errTokenSpace)
	}
	return s, nil
}

var errTokenSpace = errors.New("white space or a control character inside the token (one token per file)")
