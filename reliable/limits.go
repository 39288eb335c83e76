package reliable

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wsreliable/wsreliable/queue"
)

// budget is a number of bytes that readers take before they queue input
// and that delivery gives back once the input is handled. A reader that
// finds the budget spent waits: it stops reading its socket, so the peer
// is slowed by TCP's flow control instead of growing the server's memory.
type budget struct {
	max int64

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced whenever bytes are given back
}

func newBudget(max int64) *budget { return &budget{max: max, freed: make(chan struct{})} }

// acquire takes n bytes, waiting until they are free or stop is closed
// (false). More than the whole budget is taken once nothing else is held,
// so a message as large as the budget still goes through alone.
func (b *budget) acquire(n int64, stop <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-stop:
			return false
		}
	}
}

// release gives back n bytes.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// inUse returns the bytes taken.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// connLimits counts connections from the moment ServeHTTP accepts a
// request until its session ends: in all, per remote IP and per identity.
type connLimits struct {
	max, perIP, perIdentity int // <= 0: no limit of that kind

	mu         sync.Mutex
	total      int
	byIP       map[string]int
	byIdentity map[string]int
}

func newConnLimits(max, perIP, perIdentity int) *connLimits {
	return &connLimits{max: max, perIP: perIP, perIdentity: perIdentity,
		byIP: make(map[string]int), byIdentity: make(map[string]int)}
}

// take counts one connection from ip for identity and reports which limit,
// if any, refused it ("" if none did). An empty ip has no share.
func (l *connLimits) take(ip, identity string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max:
		return "connections"
	case l.perIP > 0 && ip != "" && l.byIP[ip] >= l.perIP:
		return "connections per IP"
	case l.perIdentity > 0 && l.byIdentity[identity] >= l.perIdentity:
		return "connections per identity"
	}
	l.total++
	l.byIP[ip]++
	l.byIdentity[identity]++
	return ""
}

// put gives back what take counted.
func (l *connLimits) put(ip, identity string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	if l.byIdentity[identity]--; l.byIdentity[identity] <= 0 {
		delete(l.byIdentity, identity)
	}
}

// remoteIP is the host part of r.RemoteAddr (the proxy's address behind a
// reverse proxy).
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// defaultMaxConnections is the connection cap when ServerOptions leaves
// it zero: nine tenths of the process's open-file limit less a reserve for
// the store and listeners, so the cap is met before the process runs out
// of descriptors (when the accept loop would fail for everyone).
func defaultMaxConnections() int {
	n := openFileLimit()
	if n <= 0 {
		return 10_000
	}
	return max(16, (n-64)*9/10)
}

// storeFullRetry is the retry hint of a hello refused over
// MaxStoreBytes: the store drains as clients take their pushes.
const storeFullRetry = "5s"

// storeStats is the optional method a store reports its size with.
type storeStats interface{ Stats() queue.Stats }

// storeBytes returns the live data of the store (queue.Stats.DataBytes),
// 0 if the store does not say.
func (s *Server) storeBytes() int64 {
	st, ok := s.store.(storeStats)
	if !ok {
		return 0
	}
	return st.Stats().DataBytes
}

// storeFull reports whether the store is at MaxStoreBytes, and counts the
// refusal that follows if it is.
func (s *Server) storeFull() bool {
	if s.opts.MaxStoreBytes < 0 || s.storeBytes() < s.opts.MaxStoreBytes {
		return false
	}
	s.counters.storeFull.Add(1)
	return true
}

// rateKind names what a token bucket in Server.rates counts, and for
// whom.
type rateKind uint8

const (
	rateMessages           rateKind = iota // MaxMessageRate, per identity
	rateBytes                              // MaxByteRate, per identity
	rateHandshakesIP                       // MaxHandshakeRatePerIP, per remote IP
	rateHandshakesIdentity                 // MaxHandshakeRatePerIdentity
)

// rateKey is a bucket's key in Server.rates: its kind and the identity
// or IP it is for.
type rateKey struct {
	kind rateKind
	who  string
}

// rateBucket is one token bucket of Server.rates: an identity's
// MaxMessageRate or MaxByteRate (which sessions reserve from, waiting),
// or an IP's or identity's handshake rate (which requests take from, or
// are refused). Tokens may be owed: a reservation larger than the tokens
// at hand is granted with the wait until they would have accrued, so a
// batch larger than the burst still goes through, at the rate.
type rateBucket struct {
	rate, burst float64
	refs        int // sessions holding the bucket, guarded by Server.mu; the bucket outlives them until refilled

	mu     sync.Mutex
	tokens float64 // may be negative: owed
	at     time.Time
}

func newRateBucket(rate float64, burst int, now time.Time) *rateBucket {
	return &rateBucket{rate: rate, burst: float64(burst), tokens: float64(burst), at: now}
}

// refillLocked adds the tokens accrued since the last call. b.mu must be
// held.
func (b *rateBucket) refillLocked(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
}

// reserve takes n tokens at now and returns how long the caller must
// wait before it uses them (0: at once).
func (b *rateBucket) reserve(now time.Time, n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return b.waitLocked(-b.tokens)
}

// take takes one token at now if there is one, and returns 0; otherwise
// it takes nothing (a refused caller owes nothing) and returns how long
// until a token would be there.
func (b *rateBucket) take(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return max(b.waitLocked(1-b.tokens), time.Nanosecond)
}

// waitLocked is how long n tokens take to accrue; capped, so that a tiny
// rate cannot overflow the duration. b.mu must be held.
func (b *rateBucket) waitLocked(n float64) time.Duration {
	return time.Duration(min(n/b.rate, maxRateWait.Seconds()) * float64(time.Second))
}

// refilled reports whether the bucket is full at now: forgetting it then
// changes nothing.
func (b *rateBucket) refilled(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens+now.Sub(b.at).Seconds()*b.rate >= b.burst
}

// maxRateWait bounds one wait for a rate.
const maxRateWait = time.Hour

// rateBucketLocked returns the bucket of k, creating it (full) with rate
// and burst if there is none. s.mu must be held.
func (s *Server) rateBucketLocked(k rateKey, rate float64, burst int, now time.Time) *rateBucket {
	b := s.rates[k]
	if b == nil {
		s.sweepRatesLocked(now) // first: a new bucket is full, and would go
		b = newRateBucket(rate, burst, now)
		s.rates[k] = b
	}
	return b
}

// handshakeBurst is the bucket size for a handshake rate: one second's
// worth, at least 1.
func handshakeBurst(rate float64) int {
	return max(1, int(min(rate, 1<<30)))
}

// takeHandshake takes one handshake from the bucket of k (a handshake
// rate of rate a second) and returns 0, or how long until the bucket
// would allow one if it is empty; a refused handshake takes nothing.
func (s *Server) takeHandshake(k rateKey, rate float64) time.Duration {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateBucketLocked(k, rate, handshakeBurst(rate), now).take(now)
}

// The limits named in ServerStats.Refused by the handshake rates.
const (
	limitHandshakesIP       = "handshakes per IP"
	limitHandshakesIdentity = "handshakes per identity"
)

// Defaults of the rate limits that are on by default.
const (
	defaultByteRate      = 16 << 20 // MaxByteRate with Authenticate, bytes a second
	defaultHandshakeRate = 50       // MaxHandshakeRatePerIP and PerIdentity, a second
)

// rateDefaults checks and fills in MaxByteRate, ByteBurst and the
// handshake rates: afterwards zero means no limit.
func (o *ServerOptions) rateDefaults() error {
	for _, f := range []struct {
		name string
		v    *float64
		def  float64
	}{
		{"MaxByteRate", &o.MaxByteRate, defaultByteRate},
		{"MaxHandshakeRatePerIP", &o.MaxHandshakeRatePerIP, defaultHandshakeRate},
		{"MaxHandshakeRatePerIdentity", &o.MaxHandshakeRatePerIdentity, defaultHandshakeRate},
	} {
		switch v := *f.v; {
		case v != v:
			return fmt.Errorf("reliable: ServerOptions.%s is NaN", f.name)
		case v < 0:
			*f.v = 0
		case v == 0:
			*f.v = f.def
		}
	}
	if o.Authenticate == nil {
		// Every client is the empty identity: a default per-identity
		// limit would be one for the whole server.
		o.MaxHandshakeRatePerIdentity = 0
		if o.MaxByteRate == defaultByteRate {
			o.MaxByteRate = 0
		}
	}
	if o.ByteBurst < 0 {
		return fmt.Errorf("reliable: ServerOptions.ByteBurst is negative (%d)", o.ByteBurst)
	}
	if o.ByteBurst == 0 && o.MaxByteRate > 0 {
		o.ByteBurst = max(o.MaxMessageSize, int64(min(o.MaxByteRate, 1<<50)))
	}
	return nil
}

// refuseHandshake answers a request refused by a handshake rate: 429
// with Retry-After, in whole seconds, at least 1.
func (s *Server) refuseHandshake(w http.ResponseWriter, limit, ip string, retry time.Duration) {
	s.refusedLog(limit, ip)
	secs := max(1, int64((retry+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	http.Error(w, "wsreliable: too many "+limit+"; try again later", http.StatusTooManyRequests)
}
