package server

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

// routeMetrics counts a listener's requests by route and status, and their
// duration. Counts are atomics in fixed arrays, turned into series only when
// scraped: the hot path pays one atomic add and one histogram observation,
// with no lock and no allocation.
type routeMetrics struct {
	mu      sync.Mutex
	routes  map[string]*routeStats
	other   *routeStats // unknown routes and unreadable requests
	servers map[string]*fasthttp.Server

	duration                *prometheus.HistogramVec
	requestsDesc, openConns *prometheus.Desc
}

type routeStats struct {
	name     string
	statuses [600]atomic.Uint64
	duration prometheus.Observer
}

func (r *routeStats) count(status int) {
	if status < 0 || status >= len(r.statuses) {
		status = 0
	}
	r.statuses[status].Add(1)
}

func newRouteMetrics() *routeMetrics {
	m := &routeMetrics{
		routes:  map[string]*routeStats{},
		servers: map[string]*fasthttp.Server{},
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flashsale_http_request_duration_seconds",
			Help:    "Time from routing a request to its response being ready, by route.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16), // 25 µs .. 0.8 s
		}, []string{"route"}),
		requestsDesc: prometheus.NewDesc("flashsale_http_requests_total", "HTTP requests by route and status.", []string{"route", "status"}, nil),
		openConns:    prometheus.NewDesc("flashsale_http_open_connections", "Open connections by listener.", []string{"listener"}, nil),
	}
	m.other = m.route("other")
	return m
}

func (m *routeMetrics) route(name string) *routeStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.routes[name]
	if r == nil {
		r = &routeStats{name: name, duration: m.duration.WithLabelValues(name)}
		m.routes[name] = r
	}
	return r
}

// listen counts the open connections of srv under the listener's name.
func (m *routeMetrics) listen(name string, srv *fasthttp.Server) {
	m.mu.Lock()
	m.servers[name] = srv
	m.mu.Unlock()
}

// instrument counts h's answers under the route name.
func (f *front) instrument(name string, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	r := f.routes.route(name)
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		h(ctx)
		r.duration.Observe(time.Since(start).Seconds())
		r.count(ctx.Response.StatusCode())
	}
}

func (m *routeMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	ch <- m.requestsDesc
	ch <- m.openConns
}

func (m *routeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.routes {
		for status := range r.statuses {
			if n := r.statuses[status].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(m.requestsDesc, prometheus.CounterValue, float64(n), r.name, strconv.Itoa(status))
			}
		}
	}
	for name, srv := range m.servers {
		ch <- prometheus.MustNewConstMetric(m.openConns, prometheus.GaugeValue, float64(srv.GetOpenConnectionsCount()), name)
	}
}

// edgeMetrics are an edge node's: purchase outcomes by code, admission
// decisions, and each item's stock as the engine sees it.
type edgeMetrics struct {
	s *Server

	outcomes *prometheus.CounterVec
	byCode   map[engine.Code]prometheus.Counter
	created  prometheus.Counter
	replayed prometheus.Counter

	admitted     prometheus.Counter
	shed         prometheus.Counter
	stale        prometheus.Counter // shed: waited past -max-queue-time
	connsRefused prometheus.Counter
	limited      [4]prometheus.Counter // by admission.Limit
	decisions    *prometheus.CounterVec
	redeemed     *prometheus.CounterVec // redemption answers by outcome
	durations    *prometheus.HistogramVec
	decided      [3]prometheus.Observer // by decidedWon, decidedReplayed, decidedRefused
	queueTime    prometheus.Histogram   // from trusted proxies' X-Request-Start

	stockTotal, stockLeft, sold, pending, auditDifference, idemEntries, inflight, clients *prometheus.Desc
}

// Results of flashsale_purchase_decision_seconds.
const (
	decidedWon = iota
	decidedReplayed
	decidedRefused
)

var purchaseCodes = []engine.Code{
	engine.CodeInvalidRequest, engine.CodeItemNotFound, engine.CodeSoldOut, engine.CodeLimitExceeded,
	engine.CodeSaleNotStarted, engine.CodeSaleEnded, engine.CodeRequestInProgress,
	engine.CodeIdempotencyKeyReused, engine.CodeUnavailable, codeInternal,
}

func newEdgeMetrics(s *Server) *edgeMetrics {
	m := &edgeMetrics{
		s: s,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_purchase_outcomes_total",
			Help: "Purchase answers by outcome: created, replayed, or the error code.",
		}, []string{"outcome"}),
		byCode: map[engine.Code]prometheus.Counter{},

		stockTotal: prometheus.NewDesc("flashsale_item_stock", "Units of the item for the whole sale (its stock_total).", []string{"item"}, nil),
		stockLeft:  prometheus.NewDesc("flashsale_item_stock_left", "Units of the item a buyer can still get.", []string{"item"}, nil),
		sold:       prometheus.NewDesc("flashsale_item_sold", "Units of the item in durable orders.", []string{"item"}, nil),
		pending:    prometheus.NewDesc("flashsale_item_pending", "Units of the item reserved by purchases not yet durable.", []string{"item"}, nil),
		auditDifference: prometheus.NewDesc("flashsale_item_audit_difference",
			"Standalone: stock_total - (stock_left + sold + pending) of the item: must be 0; alert on anything else. (Cluster mode: flashsale_pool_audit_difference.)",
			[]string{"item"}, nil),
		idemEntries: prometheus.NewDesc("flashsale_idempotency_entries", "Request ids remembered for replays.", nil, nil),
		inflight:    prometheus.NewDesc("flashsale_admission_inflight", "Public API requests being served (bound: -max-inflight).", nil, nil),
		clients:     prometheus.NewDesc("flashsale_admission_tracked_clients", "Client IPs tracked by the per-IP rate limit.", nil, nil),
	}
	for _, c := range purchaseCodes {
		m.byCode[c] = m.outcomes.WithLabelValues(string(c))
	}
	m.redeemed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_code_redemptions_total",
		Help: "Redemption answers by outcome: redeemed, replayed, guessing (refused before the check: too many invalid codes), or the error code.",
	}, []string{"outcome"})
	for _, o := range []string{"redeemed", "replayed", "guessing", string(codeInvalidCode), string(codeCodeExpired), string(codeCodeUsed),
		string(engine.CodeRequestInProgress), string(engine.CodeUnavailable)} {
		m.redeemed.WithLabelValues(o) // every outcome exported from the start, at 0
	}
	m.queueTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flashsale_request_queue_seconds",
		Help:    "Time from a trusted proxy's X-Request-Start to admission: the wait in front of the handlers (-max-queue-time refuses past it). With the server idle its low end is the proxy's clock offset.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 15), // 0.1 ms .. 1.6 s
	})
	m.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flashsale_purchase_decision_seconds",
		Help:    "Time the engine took to answer a purchase, by result: won (the order durable), replayed, refused (sold out, over the limit, 503...): winners and losers apart.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 2.5, 16), // 1 µs .. 0.9 s
	}, []string{"result"})
	for i, r := range [...]string{decidedWon: "won", decidedReplayed: "replayed", decidedRefused: "refused"} {
		m.decided[i] = m.durations.WithLabelValues(r)
	}
	m.created = m.outcomes.WithLabelValues("created")
	m.replayed = m.outcomes.WithLabelValues("replayed")
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flashsale_admission_decisions_total",
		Help: "Admission decisions on the public API: admitted, rate_limited by limit (global, item, ip), or shed (by the in-flight bound, or queue_time: waited past -max-queue-time).",
	}, []string{"decision", "limit"})
	m.admitted = m.decisions.WithLabelValues("admitted", "")
	m.shed = m.decisions.WithLabelValues("shed", "inflight")
	m.stale = m.decisions.WithLabelValues("shed", "queue_time")
	m.connsRefused = m.decisions.WithLabelValues("connection_refused", "conns_per_ip")
	for _, l := range []admission.Limit{admission.Global, admission.Item, admission.IP} {
		m.limited[l] = m.decisions.WithLabelValues("rate_limited", l.String())
	}
	return m
}

func (m *edgeMetrics) outcome(c engine.Code) {
	if ctr := m.byCode[c]; ctr != nil {
		ctr.Inc()
		return
	}
	m.byCode[codeInternal].Inc()
}

func (m *edgeMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.outcomes.Describe(ch)
	m.decisions.Describe(ch)
	m.redeemed.Describe(ch)
	m.durations.Describe(ch)
	m.queueTime.Describe(ch)
	for _, d := range []*prometheus.Desc{m.stockTotal, m.stockLeft, m.sold, m.pending, m.auditDifference, m.idemEntries, m.inflight, m.clients} {
		ch <- d
	}
}

func (m *edgeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.outcomes.Collect(ch)
	m.decisions.Collect(ch)
	m.redeemed.Collect(ch)
	m.durations.Collect(ch)
	m.queueTime.Collect(ch)
	ch <- prometheus.MustNewConstMetric(m.inflight, prometheus.GaugeValue, float64(m.s.inflight.InUse()))
	ch <- prometheus.MustNewConstMetric(m.clients, prometheus.GaugeValue, float64(m.s.limits.Clients()))
	for _, v := range m.s.eng.Items() {
		ch <- prometheus.MustNewConstMetric(m.stockTotal, prometheus.GaugeValue, float64(v.Stock), v.ID)
		ch <- prometheus.MustNewConstMetric(m.stockLeft, prometheus.GaugeValue, float64(v.StockLeft), v.ID)
		ch <- prometheus.MustNewConstMetric(m.sold, prometheus.GaugeValue, float64(v.Sold), v.ID)
		ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(v.Pending), v.ID)
	}
	for _, a := range m.s.eng.Audit() {
		ch <- prometheus.MustNewConstMetric(m.auditDifference, prometheus.GaugeValue, float64(a.Difference), a.ID)
	}
	ch <- prometheus.MustNewConstMetric(m.idemEntries, prometheus.GaugeValue, float64(m.s.eng.IdempotencyEntries()))
}
