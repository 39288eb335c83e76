// Package otel exports a [reliable.Server]'s metrics through the
// OpenTelemetry metrics API.
//
// It is a nested module, so that an application which imports only
// github.com/wsreliable/wsreliable/reliable never depends on
// OpenTelemetry. It uses only go.opentelemetry.io/otel/metric; the
// application chooses the SDK and exporter behind the MeterProvider:
//
//	obs, err := wsotel.NewObserver(mp)
//	srv, err := reliable.NewServer(path, handler, &reliable.ServerOptions{Observer: obs})
//	reg, err := wsotel.Register(mp, srv) // reg.Unregister() stops reading srv
//
// with the package imported as
// wsotel "github.com/wsreliable/wsreliable/metrics/otel". Instruments
// belong to the meter named [ScopeName].
//
// # Counters and gauges
//
// [Register] creates asynchronous instruments and one callback that reads
// [reliable.Server.Stats] once per collection, so what is exported always
// agrees with Stats. Counters count since the server was created.
//
//	wsreliable.sessions                 gauge      {session}  open sessions
//	wsreliable.clients                  gauge      {client}   clients with a session
//	wsreliable.inflight.size            gauge      By         bytes read and not yet handled
//	wsreliable.connects                 counter    {session}  sessions started
//	wsreliable.disconnects{code}        counter    {session}  sessions ended, by WebSocket close code
//	wsreliable.messages.received        counter    {message}  client messages handled and acknowledged
//	wsreliable.received.size            counter    By         their payload bytes
//	wsreliable.messages.rejected        counter    {message}  client messages rejected
//	wsreliable.messages.expired         counter    {message}  client messages that arrived expired
//	wsreliable.messages.duplicate       counter    {message}  client messages dropped as duplicates
//	wsreliable.pushes                   counter    {message}  pushes committed to client outboxes
//	wsreliable.pushed.size              counter    By         their payload bytes
//	wsreliable.pushes.settled{status}   counter    {message}  pushes settled: acked, rejected, expired, evicted
//	wsreliable.pushes.redelivered       counter    {message}  pushes sent again after a reconnect
//	wsreliable.refused{limit}           counter    {connection} connections refused by a limit
//	wsreliable.store.size               gauge      By         live data in the store (MaxStoreBytes)
//	wsreliable.store.full               counter    {refusal}  pushes and hellos refused at MaxStoreBytes
//	wsreliable.rate.waits               counter    {wait}     reads held back by MaxMessageRate
//
// # Histograms
//
// [Observer] implements [reliable.Observer]:
//
//	wsreliable.handler.duration{result}  s          handler calls; result is ok, rejected or error (retried)
//	wsreliable.commit.duration           s          watermark commits
//	wsreliable.commit.messages           {message}  messages covered by one commit
//
// # Concurrency
//
// Observer is safe for concurrent use and does not block (the SDK
// aggregates in memory). The Register callback runs on the reader's
// goroutine at each collection.
package otel

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/wsreliable/wsreliable/reliable"
)

// ScopeName is the instrumentation scope (meter name) of every instrument
// this package creates.
const ScopeName = "github.com/wsreliable/wsreliable/metrics/otel"

// Handler results, the values of wsreliable.handler.duration's result
// attribute.
var (
	resultOK       = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))
	resultRejected = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "rejected")))
	resultError    = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error")))
)

// Observer implements [reliable.Observer] with histograms. It is safe for
// concurrent use.
type Observer struct {
	handler        metric.Float64Histogram
	commit         metric.Float64Histogram
	commitMessages metric.Int64Histogram
}

// NewObserver creates the histograms on mp's meter [ScopeName]. Pass the
// Observer as [reliable.ServerOptions.Observer]. The error is the
// MeterProvider's, if it refuses an instrument.
func NewObserver(mp metric.MeterProvider) (*Observer, error) {
	m := mp.Meter(ScopeName)
	var o Observer
	var err, e error
	o.handler, e = m.Float64Histogram("wsreliable.handler.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of handler calls, by result: ok, rejected or error (retried later)."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.0004, 0.0016, 0.0064, 0.0256, 0.1024, 0.4096, 1.6384, 6.5536, 26.2144))
	err = errors.Join(err, e)
	o.commit, e = m.Float64Histogram("wsreliable.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of watermark commits (one transaction and fsync each)."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
	err = errors.Join(err, e)
	o.commitMessages, e = m.Int64Histogram("wsreliable.commit.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages covered by one watermark commit."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	return &o, nil
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
	o.handler.Record(context.Background(), d.Seconds(), result)
}

// ObserveCommit implements [reliable.Observer].
func (o *Observer) ObserveCommit(d time.Duration, messages int) {
	ctx := context.Background()
	o.commit.Record(ctx, d.Seconds())
	o.commitMessages.Record(ctx, int64(messages))
}

var _ reliable.Observer = (*Observer)(nil)

// Register creates asynchronous instruments on mp's meter [ScopeName] and
// a callback that reads srv.Stats() once per collection. Unregister the
// returned registration to stop reading srv (for example after
// srv.Shutdown). The error is the MeterProvider's, if it refuses an
// instrument or the callback.
func Register(mp metric.MeterProvider, srv *reliable.Server) (metric.Registration, error) {
	m := mp.Meter(ScopeName)
	var err error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, e := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		err = errors.Join(err, e)
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, e := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		err = errors.Join(err, e)
		return c
	}
	var (
		sessions      = gauge("wsreliable.sessions", "{session}", "Open sessions.")
		clients       = gauge("wsreliable.clients", "{client}", "Clients with a session (or one ending).")
		inFlight      = gauge("wsreliable.inflight.size", "By", "Bytes read from clients and not yet handled.")
		connects      = counter("wsreliable.connects", "{session}", "Sessions started.")
		disconnects   = counter("wsreliable.disconnects", "{session}", "Sessions ended, by WebSocket close code (1006: the link broke without a close frame).")
		received      = counter("wsreliable.messages.received", "{message}", "Client messages handled and acknowledged.")
		receivedBytes = counter("wsreliable.received.size", "By", "Payload bytes of the client messages handled and acknowledged.")
		rejected      = counter("wsreliable.messages.rejected", "{message}", "Client messages rejected, by the handler or after MaxAttempts.")
		expired       = counter("wsreliable.messages.expired", "{message}", "Client messages that arrived past their expiry.")
		duplicates    = counter("wsreliable.messages.duplicate", "{message}", "Client messages dropped as already delivered.")
		pushed        = counter("wsreliable.pushes", "{message}", "Pushes committed to client outboxes.")
		pushedBytes   = counter("wsreliable.pushed.size", "By", "Payload bytes of the pushes committed to client outboxes.")
		pushSettled   = counter("wsreliable.pushes.settled", "{message}", "Pushes settled, by status: acked, rejected, expired or evicted.")
		redelivered   = counter("wsreliable.pushes.redelivered", "{message}", "Pushes sent again after a reconnect.")
		refused       = counter("wsreliable.refused", "{connection}", "Connections refused by a limit, by limit.")
		storeBytes    = gauge("wsreliable.store.size", "By", "Live data in the server's store, as MaxStoreBytes counts it.")
		storeFull     = counter("wsreliable.store.full", "{refusal}", "Pushes and hellos refused because the store was at MaxStoreBytes.")
		rateWaits     = counter("wsreliable.rate.waits", "{wait}", "Times a session stopped reading because its identity had used up MaxMessageRate.")
		byteRateWaits = counter("wsreliable.byte_rate.waits", "{wait}", "Times a session stopped reading because its identity had used up MaxByteRate.")
	)
	if err != nil {
		return nil, err
	}
	status := func(s string) metric.ObserveOption {
		return metric.WithAttributes(attribute.String("status", s))
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := srv.Stats()
		count := func(c metric.Int64ObservableCounter, v uint64, opts ...metric.ObserveOption) {
			o.ObserveInt64(c, int64(v), opts...)
		}
		o.ObserveInt64(sessions, int64(st.Sessions))
		o.ObserveInt64(clients, int64(st.Clients))
		o.ObserveInt64(inFlight, st.InFlightBytes)
		count(connects, st.Connects)
		for code, n := range st.Disconnects {
			count(disconnects, n, metric.WithAttributes(attribute.String("code", strconv.Itoa(int(code)))))
		}
		count(received, st.Received)
		count(receivedBytes, st.ReceivedBytes)
		count(rejected, st.Rejected)
		count(expired, st.Expired)
		count(duplicates, st.Duplicates)
		count(pushed, st.Pushed)
		count(pushedBytes, st.PushedBytes)
		count(pushSettled, st.PushAcked, status("acked"))
		count(pushSettled, st.PushRejected, status("rejected"))
		count(pushSettled, st.PushExpired, status("expired"))
		count(pushSettled, st.PushEvicted, status("evicted"))
		count(redelivered, st.Redelivered)
		for limit, n := range st.Refused {
			count(refused, n, metric.WithAttributes(attribute.String("limit", limit)))
		}
		o.ObserveInt64(storeBytes, st.StoreBytes)
		count(storeFull, st.StoreFull)
		count(rateWaits, st.RateWaits)
		count(byteRateWaits, st.ByteRateWaits)
		return nil
	}, sessions, clients, inFlight, connects, disconnects, received, receivedBytes, rejected,
		expired, duplicates, pushed, pushedBytes, pushSettled, redelivered, refused,
		storeBytes, storeFull, rateWaits, byteRateWaits)
}
