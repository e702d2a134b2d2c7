package server

// The public listener's entry and the purchase, the path a shopper's
// "buy" takes through the front: admission (rate limits, the in-flight
// bound), the route matched by hand, identity, the body decoded, the
// engine asked, the answer written.

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

// publicHandler is the public listener's entry. The purchase route is
// matched here by hand, before the router: the router copies every path
// parameter into a new string and slice, and a sold-out answer must not
// allocate (allocation_test.go). The router still knows the route, for 405s.
func (s *Server) publicHandler() fasthttp.RequestHandler {
	r := s.newRouter()
	r.SaveMatchedRoutePath = s.tracing != nil // a traced request's span is named for its route
	s.routePurchase = s.instrument("purchase", func(ctx *fasthttp.RequestCtx) {
		id, _ := purchaseItemID(ctx.Path())
		s.purchase(ctx, b2s(id))
	})
	r.GET("/api/v1/items", s.instrument("items", s.listItems))
	r.GET("/api/v1/items/{id}", s.instrument("item", s.getItem))
	r.POST("/api/v1/items/{id}/purchase", s.routePurchase)
	r.GET("/api/v1/orders/{order_id}", s.instrument("order", s.getOrder))
	r.GET("/api/v1/users/{user_id}/orders", s.instrument("user_orders", s.userOrders))
	r.POST("/api/v1/codes/redeem", s.instrument("redeem", s.redeem))
	r.GET("/api/v1/items/{id}/leaderboard", s.instrument("leaderboard", s.leaderboard))
	s.health(r)
	h := r.Handler
	serve := func(ctx *fasthttp.RequestCtx) {
		if ctx.IsPost() {
			if _, ok := purchaseItemID(ctx.Path()); ok {
				s.routePurchase(ctx)
				return
			}
		}
		h(ctx)
	}
	return func(ctx *fasthttp.RequestCtx) {
		s.ids.set(ctx)
		switch {
		case !bytes.HasPrefix(ctx.Path(), apiPrefix):
			h(ctx) // health endpoints and 404s are never refused
		case s.tracing != nil:
			s.serveTraced(ctx, serve)
		default:
			s.admitAndServe(ctx, serve)
		}
	}
}

// admitAndServe serves a request of the public API that admission lets in.
func (s *Server) admitAndServe(ctx *fasthttp.RequestCtx, serve fasthttp.RequestHandler) {
	if s.admit(ctx) {
		s.serveHolding(ctx, context.Background(), serve)
	}
}

// slotKey is the user value holding an admitted request's in-flight slot.
const slotKey = "flashsale.slot"

// serveHolding serves an admitted request holding its in-flight slot,
// which its purchase may give back while it waits for durability
// (admission.Park); parent is the context of its engine and store calls.
func (s *Server) serveHolding(ctx *fasthttp.RequestCtx, parent context.Context, serve fasthttp.RequestHandler) {
	slot := s.inflight.Held(parent)
	defer slot.End()
	ctx.SetUserValue(slotKey, slot)
	defer ctx.SetUserValue(slotKey, nil)
	serve(ctx)
}

// purchaseContext is the context a purchase runs in: its in-flight slot
// (with the trace's context when traced), or Background outside admission.
func (s *Server) purchaseContext(ctx *fasthttp.RequestCtx) context.Context {
	if slot, ok := ctx.UserValue(slotKey).(*admission.Slot); ok {
		return slot
	}
	return s.requestContext(ctx)
}

var apiPrefix = []byte("/api/")

// admit refuses a request that waited in the queue past -max-queue-time
// (503), then applies the global and per-IP rate limits (429) and the
// in-flight bound (503) to a request of the public API. When it returns true
// the caller must release the in-flight slot.
func (s *Server) admit(ctx *fasthttp.RequestCtx) bool {
	now := time.Now()
	if s.stale(ctx, now) {
		s.metrics.stale.Inc()
		writeError(ctx, engine.CodeUnavailable, "the request waited too long before the server got to it (over -max-queue-time); retry shortly")
		s.routes.other.count(fasthttp.StatusServiceUnavailable)
		return false
	}
	if lim, wait := s.limits.Allow(s.clientIP(ctx), now); lim != admission.None {
		s.rateLimited(ctx, lim, wait)
		return false
	}
	if !s.inflight.Acquire() {
		s.metrics.shed.Inc()
		writeError(ctx, engine.CodeUnavailable, "the server is at its in-flight limit; retry shortly (operators: raise -max-inflight)")
		s.routes.other.count(fasthttp.StatusServiceUnavailable)
		return false
	}
	s.metrics.admitted.Inc()
	return true
}

// stale reports a request whose trusted proxy stamped it (X-Request-Start)
// longer than MaxQueueTime ago: it has waited in the proxy's and this
// server's queues past its budget. Without a believable stamp from a
// trusted proxy nothing is stale. Every stamp read is observed in
// flashsale_request_queue_seconds, budget or not.
func (s *Server) stale(ctx *fasthttp.RequestCtx, now time.Time) bool {
	if len(s.opts.TrustedProxies) == 0 {
		return false // no stamp is believed: not even looked for
	}
	v := ctx.Request.Header.Peek("X-Request-Start")
	if len(v) == 0 || !s.trusted(peerAddr(ctx)) {
		return false
	}
	d, ok := admission.QueueTime(v, now)
	if !ok {
		return false
	}
	s.metrics.queueTime.Observe(d.Seconds())
	return s.opts.MaxQueueTime > 0 && d > s.opts.MaxQueueTime
}

// rateLimited answers 429 with the wait in Retry-After.
func (s *Server) rateLimited(ctx *fasthttp.RequestCtx, lim admission.Limit, wait time.Duration) {
	s.metrics.limited[lim].Inc()
	switch lim {
	case admission.Global:
		writeError(ctx, codeRateLimited, "the server is at its global rate limit")
	case admission.Item:
		writeError(ctx, codeRateLimited, "this item is at its rate limit")
	default:
		writeError(ctx, codeRateLimited, "too many requests from this client")
	}
	var buf [20]byte
	ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], int64(admission.RetryAfter(wait)), 10))
	s.routes.other.count(fasthttp.StatusTooManyRequests)
}

var (
	purchasePrefix = []byte("/api/v1/items/")
	purchaseSuffix = []byte("/purchase")
)

// purchaseItemID matches /api/v1/items/{id}/purchase as the router would:
// id is one non-empty path segment.
func purchaseItemID(path []byte) ([]byte, bool) {
	if !bytes.HasPrefix(path, purchasePrefix) || !bytes.HasSuffix(path, purchaseSuffix) {
		return nil, false
	}
	id := path[len(purchasePrefix) : len(path)-len(purchaseSuffix)]
	if len(path) < len(purchasePrefix)+len(purchaseSuffix) || len(id) == 0 || bytes.IndexByte(id, '/') >= 0 {
		return nil, false
	}
	return id, true
}

// purchaseBody is the request of POST /api/v1/items/{id}/purchase.
type purchaseBody struct {
	UserID    string `json:"user_id"`
	Quantity  int64  `json:"quantity"`
	RequestID string `json:"request_id"`
}

var purchaseBodies = newPool(func() *purchaseBody { return new(purchaseBody) })

const purchaseBodyHelp = "body must be a JSON object: user_id (string), quantity (integer, default 1), request_id (string, optional)"

// parsePurchase reads a purchase request. Its strings alias the request.
// user, when set, is the authenticated shopper and wins over the body.
func parsePurchase(ctx *fasthttp.RequestCtx, itemID, user string, body *purchaseBody) (req engine.PurchaseRequest, msg string) {
	*body = purchaseBody{Quantity: 1, RequestID: noRequestID}
	if err := decodeJSON(ctx.PostBody(), body); err != nil {
		return req, purchaseBodyHelp
	}
	if user == "" {
		user = body.UserID
	}
	req = engine.PurchaseRequest{ItemID: itemID, UserID: user, RequestID: body.RequestID, Quantity: body.Quantity}
	switch req.RequestID {
	case noRequestID:
		req.RequestID = ""
	case "":
		return req, engine.ErrBadRequestID.Message() // sent, but empty
	}
	if raw := ctx.Request.Header.Peek("Idempotency-Key"); len(raw) > 0 {
		key, ok := idempotencyKey(raw)
		switch {
		case !ok:
			return req, "the Idempotency-Key header is not a request id or a quoted one"
		case req.RequestID != "" && req.RequestID != key:
			return req, "request_id and the Idempotency-Key header differ"
		}
		req.RequestID = key
	}
	if req.UserID == "" {
		return req, "user_id is required"
	}
	return req, ""
}

// noRequestID stands for a request_id the body did not send, so that one it
// sent empty is told apart (and refused). It can never be a request id.
const noRequestID = "\x00"

// idempotencyKey reads the Idempotency-Key header: a request id, bare or as
// a Structured Field string (quoted, with \" and \\ escaped), as the IETF
// draft has clients send it. A bare key aliases the header; only an
// escaped one is copied.
func idempotencyKey(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return b2s(v), true // bare; the engine validates it
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return b2s(inner), len(inner) > 0 && bytes.IndexByte(inner, '"') < 0
	}
	out := make([]byte, 0, len(inner))
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch {
		case c == '"':
			return "", false // must be escaped
		case c == '\\':
			if i++; i == len(inner) || inner[i] != '"' && inner[i] != '\\' {
				return "", false
			}
			c = inner[i]
		}
		out = append(out, c)
	}
	return string(out), true
}

func (s *Server) purchase(ctx *fasthttp.RequestCtx, itemID string) {
	if !jsonBody(ctx) {
		writeError(ctx, codeUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	body := purchaseBodies.Get()
	defer func() {
		*body = purchaseBody{} // drop the strings that alias this request
		purchaseBodies.Put(body)
	}()
	if s.opts.Limits.Item > 0 && s.eng.HasItem(itemID) { // unknown ids get no bucket
		if lim, wait := s.limits.AllowItem(itemID, time.Now()); lim != admission.None {
			s.rateLimited(ctx, lim, wait)
			return
		}
	}
	user, ok := s.shopper(ctx)
	if !ok {
		return
	}
	req, msg := parsePurchase(ctx, itemID, user, body)
	if msg != "" {
		s.metrics.outcome(engine.CodeInvalidRequest)
		writeError(ctx, engine.CodeInvalidRequest, msg)
		return
	}
	start := time.Now()
	o, replayed, err := s.decide(ctx, req)
	if err != nil {
		s.metrics.decided[decidedRefused].Observe(time.Since(start).Seconds())
		code := engine.CodeOf(err)
		s.metrics.outcome(code)
		s.writeEngineError(ctx, err, code, &req)
		return
	}
	if replayed {
		s.metrics.decided[decidedReplayed].Observe(time.Since(start).Seconds())
		s.metrics.replayed.Inc()
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
	} else {
		s.metrics.decided[decidedWon].Observe(time.Since(start).Seconds())
		s.metrics.created.Inc()
	}
	var loc [64]byte
	ctx.Response.Header.SetBytesV("Location", strconv.AppendUint(append(loc[:0], "/api/v1/orders/"...), o.ID, 10))
	// The answer to a purchase, first or replayed, is "accepted".
	writeOrder(ctx, fasthttp.StatusCreated, o, engine.Accepted.String())
}

// decide asks the engine, in a span of its own when the request is traced.
func (s *Server) decide(ctx *fasthttp.RequestCtx, req engine.PurchaseRequest) (o *engine.Order, replayed bool, err error) {
	if s.tracing == nil {
		return s.eng.Purchase(s.purchaseContext(ctx), req)
	}
	s.tracing.Span(s.purchaseContext(ctx), "purchase decision", func(c context.Context) error {
		o, replayed, err = s.eng.Purchase(c, req)
		if code := engine.CodeOf(err); code != "" && code != engine.CodeUnavailable {
			return nil // an answer (sold out, over the limit...), not a failure
		}
		return err
	}, attribute.String("flashsale.item_id", req.ItemID))
	return o, replayed, err
}

// writeEngineError answers a refusal of the engine, naming what it is about.
func (s *Server) writeEngineError(ctx *fasthttp.RequestCtx, err error, code engine.Code, req *engine.PurchaseRequest) {
	switch code {
	case engine.CodeSoldOut:
		writeError(ctx, code, "item ", req.ItemID, " is sold out")
	case engine.CodeLimitExceeded:
		writeError(ctx, code, "user ", req.UserID, " already holds the per-user limit of item ", req.ItemID)
	case engine.CodeSaleNotStarted:
		writeError(ctx, code, "the sale of item ", req.ItemID, " has not started")
	case engine.CodeSaleEnded:
		writeError(ctx, code, "the sale of item ", req.ItemID, " has ended")
	case engine.CodeItemNotFound:
		writeError(ctx, code, "no item ", req.ItemID)
	case engine.CodeRequestInProgress:
		writeError(ctx, code, "request ", req.RequestID, " is still being processed; retry shortly")
	case engine.CodeIdempotencyKeyReused:
		writeError(ctx, code, "request id ", req.RequestID, " was used before with a different request")
	case engine.CodeUnavailable:
		if errors.Is(err, engine.ErrLedgerLost) { // the node's guard logs why, once
			writeError(ctx, code, ledgerLostMessage, "nothing was taken, retry later")
			return
		}
		s.errLog.Error("purchase failed on a dependency", "err", err)
		writeError(ctx, code, dependencyOf(err, "a dependency"), " is unavailable; nothing was taken, retry later")
	case "":
		s.errLog.Error("BUG: purchase failed with an unexpected error", "err", err)
		writeError(ctx, codeInternal, "internal error")
	default:
		writeError(ctx, code, err.(*engine.Error).Message())
	}
}

// ledgerLostMessage begins a 503's message while the cluster's ledger is
// rebuilt (engine.ErrLedgerLost).
const ledgerLostMessage = "the stock ledger is being rebuilt from the orders of record; "

// dependencyOf names the dependency whose failure err is, for a 503's
// message: the first error in the chain that says which (the circuit
// breakers' errors do), or otherwise.
func dependencyOf(err error, otherwise string) string {
	var named interface{ Dependency() string }
	if errors.As(err, &named) {
		return named.Dependency()
	}
	return otherwise
}
