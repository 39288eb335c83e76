// Package prometheus exports a [reliable.Server]'s metrics to Prometheus.
//
// It is a nested module, so that an application which imports only
// github.com/wsreliable/wsreliable/reliable never depends on
// client_golang. Both constructors return ordinary prometheus.Collectors,
// registered the way any other collector is:
//
//	obs := wsprom.NewObserver()
//	srv, err := reliable.NewServer(path, handler, &reliable.ServerOptions{Observer: obs})
//	reg.MustRegister(obs, wsprom.NewCollector(srv))
//
// with the package imported as
// wsprom "github.com/wsreliable/wsreliable/metrics/prometheus".
//
// # Counters and gauges
//
// [Collector] reads [reliable.Server.Stats] once per scrape and reports it
// as constant metrics, so a scrape always agrees with Stats: there is no
// second set of counters to drift. Counters count since the server was
// created (a restart resets them, which Prometheus' rate() handles).
//
//	wsreliable_sessions                      gauge    open sessions
//	wsreliable_clients                       gauge    clients with a session
//	wsreliable_inflight_bytes                gauge    bytes read and not yet handled
//	wsreliable_connects_total                counter  sessions started
//	wsreliable_disconnects_total{code}       counter  sessions ended, by WebSocket close code
//	wsreliable_messages_received_total       counter  client messages handled and acknowledged
//	wsreliable_received_bytes_total          counter  their payload bytes
//	wsreliable_messages_rejected_total       counter  client messages rejected
//	wsreliable_messages_expired_total        counter  client messages that arrived expired
//	wsreliable_messages_duplicate_total      counter  client messages dropped as duplicates
//	wsreliable_pushes_total                  counter  pushes committed to client outboxes
//	wsreliable_pushed_bytes_total            counter  their payload bytes
//	wsreliable_pushes_settled_total{status}  counter  pushes settled: acked, rejected, expired, evicted
//	wsreliable_pushes_redelivered_total      counter  pushes sent again after a reconnect
//	wsreliable_refused_total{limit}          counter  connections refused by a limit
//	wsreliable_store_bytes                   gauge    live data in the store (MaxStoreBytes)
//	wsreliable_store_full_total              counter  pushes and hellos refused at MaxStoreBytes
//	wsreliable_rate_waits_total              counter  reads held back by MaxMessageRate
//	wsreliable_rate_waited_seconds_total     counter  time spent held back so
//
// # Histograms
//
// [Observer] implements [reliable.Observer]:
//
//	wsreliable_handler_duration_seconds{result}  handler calls; result is ok, rejected or error (retried)
//	wsreliable_commit_duration_seconds           watermark commits
//	wsreliable_commit_messages                   messages covered by one commit
//
// # Concurrency
//
// Collector and Observer are safe for concurrent use. Observer's methods
// do not block (they update the histograms in memory).
package prometheus

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsreliable/wsreliable/reliable"
)

// Collector is a prometheus.Collector reporting a server's
// [reliable.ServerStats] at each scrape. It is safe for concurrent use.
type Collector struct {
	srv *reliable.Server

	sessions, clients, inFlight                  *prometheus.Desc
	connects, disconnects                        *prometheus.Desc
	received, receivedBytes, rejected, expired   *prometheus.Desc
	duplicates, pushed, pushedBytes, pushSettled *prometheus.Desc
	redelivered, refused                         *prometheus.Desc
	storeBytes, storeFull, rateWaits, rateWaited *prometheus.Desc
	byteRateWaits, byteRateWaited                *prometheus.Desc
}

// NewCollector returns a Collector reading srv.Stats() at each scrape.
// Register it with a prometheus.Registerer; it registers nothing itself.
func NewCollector(srv *reliable.Server) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("wsreliable_"+name, help, labels, nil)
	}
	return &Collector{
		srv:            srv,
		sessions:       d("sessions", "Open sessions."),
		clients:        d("clients", "Clients with a session (or one ending)."),
		inFlight:       d("inflight_bytes", "Bytes read from clients and not yet handled."),
		connects:       d("connects_total", "Sessions started."),
		disconnects:    d("disconnects_total", "Sessions ended, by WebSocket close code (1006: the link broke without a close frame).", "code"),
		received:       d("messages_received_total", "Client messages handled and acknowledged."),
		receivedBytes:  d("received_bytes_total", "Payload bytes of the client messages handled and acknowledged."),
		rejected:       d("messages_rejected_total", "Client messages rejected, by the handler or after MaxAttempts."),
		expired:        d("messages_expired_total", "Client messages that arrived past their expiry."),
		duplicates:     d("messages_duplicate_total", "Client messages dropped as already delivered."),
		pushed:         d("pushes_total", "Pushes committed to client outboxes."),
		pushedBytes:    d("pushed_bytes_total", "Payload bytes of the pushes committed to client outboxes."),
		pushSettled:    d("pushes_settled_total", "Pushes settled, by status: acked, rejected, expired or evicted.", "status"),
		redelivered:    d("pushes_redelivered_total", "Pushes sent again after a reconnect."),
		refused:        d("refused_total", "Connections refused by a limit, by limit.", "limit"),
		storeBytes:     d("store_bytes", "Live data in the server's store, as MaxStoreBytes counts it."),
		storeFull:      d("store_full_total", "Pushes and hellos refused because the store was at MaxStoreBytes."),
		rateWaits:      d("rate_waits_total", "Times a session stopped reading because its identity had used up MaxMessageRate."),
		rateWaited:     d("rate_waited_seconds_total", "Time sessions spent stopped so."),
		byteRateWaits:  d("byte_rate_waits_total", "Times a session stopped reading because its identity had used up MaxByteRate."),
		byteRateWaited: d("byte_rate_waited_seconds_total", "Time sessions spent stopped so."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.sessions, c.clients, c.inFlight, c.connects, c.disconnects,
		c.received, c.receivedBytes, c.rejected, c.expired, c.duplicates,
		c.pushed, c.pushedBytes, c.pushSettled, c.redelivered, c.refused,
		c.storeBytes, c.storeFull, c.rateWaits, c.rateWaited,
		c.byteRateWaits, c.byteRateWaited,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it takes one snapshot of
// srv.Stats() and reports it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.sessions, float64(st.Sessions))
	gauge(c.clients, float64(st.Clients))
	gauge(c.inFlight, float64(st.InFlightBytes))
	counter(c.connects, st.Connects)
	for code, n := range st.Disconnects {
		counter(c.disconnects, n, strconv.Itoa(int(code)))
	}
	counter(c.received, st.Received)
	counter(c.receivedBytes, st.ReceivedBytes)
	counter(c.rejected, st.Rejected)
	counter(c.expired, st.Expired)
	counter(c.duplicates, st.Duplicates)
	counter(c.pushed, st.Pushed)
	counter(c.pushedBytes, st.PushedBytes)
	counter(c.pushSettled, st.PushAcked, "acked")
	counter(c.pushSettled, st.PushRejected, "rejected")
	counter(c.pushSettled, st.PushExpired, "expired")
	counter(c.pushSettled, st.PushEvicted, "evicted")
	counter(c.redelivered, st.Redelivered)
	for limit, n := range st.Refused {
		counter(c.refused, n, limit)
	}
	gauge(c.storeBytes, float64(st.StoreBytes))
	counter(c.storeFull, st.StoreFull)
	counter(c.rateWaits, st.RateWaits)
	ch <- prometheus.MustNewConstMetric(c.rateWaited, prometheus.CounterValue, st.RateWaited.Seconds())
	counter(c.byteRateWaits, st.ByteRateWaits)
	ch <- prometheus.MustNewConstMetric(c.byteRateWaited, prometheus.CounterValue, st.ByteRateWaited.Seconds())
}

// Observer implements [reliable.Observer] with histograms, and
// prometheus.Collector to report them. It is safe for concurrent use.
type Observer struct {
	handler        *prometheus.HistogramVec
	commit         prometheus.Histogram
	commitMessages prometheus.Histogram
}

// Handler results, the values of wsreliable_handler_duration_seconds'
// result label.
const (
	resultOK       = "ok"       // acknowledged
	resultRejected = "rejected" // rejected for good
	resultError    = "error"    // failed, retried later
)

// NewObserver returns an Observer with empty histograms. Pass it as
// [reliable.ServerOptions.Observer] and register it with a
// prometheus.Registerer.
func NewObserver() *Observer {
	o := &Observer{
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsreliable_handler_duration_seconds",
			Help:    "Duration of handler calls, by result: ok, rejected or error (retried later).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs to 26s
		}, []string{"result"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsreliable_commit_duration_seconds",
			Help:    "Duration of watermark commits (one transaction and fsync each).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs to 3.3s
		}),
		commitMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsreliable_commit_messages",
			Help:    "Messages covered by one watermark commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 to 2048
		}),
	}
	// Every result appears from the start, at zero.
	for _, r := range []string{resultOK, resultRejected, resultError} {
		o.handler.WithLabelValues(r)
	}
	return o
}

// ObserveHandler implements [reliable.Observer].
func (o *Observer) ObserveHandler(d time.Duration, err error) {
	result := resultOK
	switch {
	case errors.Is(err, reliable.ErrRejected):
		result = resultRejected
	case err != nil:
		result = resultError
	}
	o.handler.WithLabelValues(result).Observe(d.Seconds())
}

// ObserveCommit implements [reliable.Observer].
func (o *Observer) ObserveCommit(d time.Duration, messages int) {
	o.commit.Observe(d.Seconds())
	o.commitMessages.Observe(float64(messages))
}

// Describe implements prometheus.Collector.
func (o *Observer) Describe(ch chan<- *prometheus.Desc) {
	o.handler.Describe(ch)
	o.commit.Describe(ch)
	o.commitMessages.Describe(ch)
}

// Collect implements prometheus.Collector.
func (o *Observer) Collect(ch chan<- prometheus.Metric) {
	o.handler.Collect(ch)
	o.commit.Collect(ch)
	o.commitMessages.Collect(ch)
}

var (
	_ reliable.Observer    = (*Observer)(nil)
	_ prometheus.Collector = (*Observer)(nil)
	_ prometheus.Collector = (*Collector)(nil)
)
