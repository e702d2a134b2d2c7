package server

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

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
	*body = purchaseBody{Quantity: 1}
	if err := decodeJSON(ctx.PostBody(), body); err != nil {
		return req, purchaseBodyHelp
	}
	if user == "" {
		user = body.UserID
	}
	req = engine.PurchaseRequest{ItemID: itemID, UserID: user, RequestID: body.RequestID, Quantity: body.Quantity}
	if key := ctx.Request.Header.Peek("Idempotency-Key"); len(key) > 0 {
		if req.RequestID != "" && req.RequestID != b2s(key) {
			return req, "request_id and the Idempotency-Key header differ"
		}
		req.RequestID = b2s(key)
	}
	if req.UserID == "" {
		return req, "user_id is required"
	}
	return req, ""
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
	o, replayed, err := s.eng.Purchase(context.Background(), req)
	if err != nil {
		code := engine.CodeOf(err)
		s.metrics.outcome(code)
		s.writeEngineError(ctx, err, code, &req)
		return
	}
	if replayed {
		s.metrics.replayed.Inc()
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
	} else {
		s.metrics.created.Inc()
	}
	var loc [64]byte
	ctx.Response.Header.SetBytesV("Location", strconv.AppendUint(append(loc[:0], "/api/v1/orders/"...), o.ID, 10))
	oj := toOrderJSON(o)
	oj.Status = engine.Accepted.String() // the answer to a purchase, first or replayed
	writeJSON(ctx, fasthttp.StatusCreated, &oj)
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
		s.errLog.Error("purchase failed on a dependency", "err", err)
		writeError(ctx, code, dependencyOf(err, "a dependency"), " is unavailable; nothing was taken, retry later")
	case "":
		s.errLog.Error("BUG: purchase failed with an unexpected error", "err", err)
		writeError(ctx, codeInternal, "internal error")
	default:
		writeError(ctx, code, err.(*engine.Error).Message())
	}
}

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
