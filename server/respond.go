package server

import (
	"strconv"
	"time"

	"github.com/bytedance/sonic/encoder"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

// Codes of docs/api.md that only the front gives (the engine has the others).
const (
	codeOrderNotFound        engine.Code = "order_not_found"
	codeBodyTooLarge         engine.Code = "body_too_large"
	codeUnsupportedMediaType engine.Code = "unsupported_media_type"
	codeUnauthorized         engine.Code = "unauthorized"
	codeNotFound             engine.Code = "not_found"
	codeMethodNotAllowed     engine.Code = "method_not_allowed"
	codeInternal             engine.Code = "internal"
	codeRateLimited          engine.Code = "rate_limited"
)

// statusOf maps every error code to its HTTP status, in one place.
func statusOf(c engine.Code) int {
	switch c {
	case engine.CodeInvalidRequest:
		return fasthttp.StatusBadRequest
	case engine.CodeItemNotFound, codeOrderNotFound, codeNotFound:
		return fasthttp.StatusNotFound
	case engine.CodeSoldOut, engine.CodeLimitExceeded, engine.CodeSaleNotStarted, engine.CodeSaleEnded,
		engine.CodeRequestInProgress, engine.CodeStockBelowSold, codeCodeUsed, codeBatchExists:
		return fasthttp.StatusConflict
	case codeInvalidCode:
		return fasthttp.StatusBadRequest
	case codeCodeExpired:
		return fasthttp.StatusGone
	case engine.CodeIdempotencyKeyReused:
		return fasthttp.StatusUnprocessableEntity
	case codeBodyTooLarge:
		return fasthttp.StatusRequestEntityTooLarge
	case codeUnsupportedMediaType:
		return fasthttp.StatusUnsupportedMediaType
	case codeUnauthorized:
		return fasthttp.StatusUnauthorized
	case codeMethodNotAllowed:
		return fasthttp.StatusMethodNotAllowed
	case codeRateLimited:
		return fasthttp.StatusTooManyRequests
	case engine.CodeUnavailable:
		return fasthttp.StatusServiceUnavailable
	}
	return fasthttp.StatusInternalServerError
}

// retryAfterSeconds is the Retry-After of 429 and 503 answers.
const retryAfterSeconds = "1"

var (
	jsonContentType = []byte("application/json")
	errorHead       = []byte(`{"error":{"code":"`)
	errorMid        = []byte(`","message":`)
	errorTail       = []byte("}}")
)

// writeError answers with the error shape of docs/api.md. The message is built
// from parts so that the losers' answers cost no allocation: parts are
// concatenated and written as one JSON string.
func writeError(ctx *fasthttp.RequestCtx, code engine.Code, msg ...string) {
	status := statusOf(code)
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(jsonContentType)
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", retryAfterSeconds)
	}
	var stack [512]byte
	b := append(stack[:0], errorHead...)
	b = append(b, code...)
	b = append(b, errorMid...)
	b = append(b, '"')
	for _, m := range msg {
		b = appendJSONStringBody(b, m)
	}
	b = append(b, '"')
	b = append(b, errorTail...)
	ctx.Response.SetBody(b)
}

// appendJSONStringBody appends s escaped for the inside of a JSON string.
func appendJSONStringBody(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// writeJSON answers with v encoded by sonic.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	buf := bufPool.Get()
	b := (*buf)[:0]
	if err := encoder.EncodeInto(&b, v, 0); err != nil {
		bufPool.Put(buf)
		writeError(ctx, codeInternal, "cannot encode the response")
		return
	}
	sendPooled(ctx, status, buf, b)
}

// sendPooled answers with the JSON body b, built in buf (from bufPool),
// which it gives back to the pool unless b grew too big to keep.
func sendPooled(ctx *fasthttp.RequestCtx, status int, buf *[]byte, b []byte) {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(jsonContentType)
	ctx.Response.SetBody(b)
	if cap(b) <= maxPooledBuf {
		*buf = b
		bufPool.Put(buf)
	}
}

// maxPooledBuf caps what the buffer pool keeps, so that one huge list does
// not pin its memory for ever.
const maxPooledBuf = 64 << 10

var bufPool = newPool(func() *[]byte { b := make([]byte, 0, 1024); return &b })

// Times on the wire are RFC 3339 in UTC; order times keep milliseconds.
const orderTimeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// writeOrder answers with one order object, whose status is status.
func writeOrder(ctx *fasthttp.RequestCtx, code int, o *engine.Order, status string) {
	buf := bufPool.Get()
	sendPooled(ctx, code, buf, appendOrderJSON((*buf)[:0], o, status))
}

// writeOrderList answers 200 with {"orders":[...]}, each with its own status.
func writeOrderList(ctx *fasthttp.RequestCtx, orders []*engine.Order) {
	buf := bufPool.Get()
	b := append((*buf)[:0], `{"orders":[`...)
	for i, o := range orders {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOrderJSON(b, o, o.Status.String())
	}
	sendPooled(ctx, fasthttp.StatusOK, buf, append(b, "]}"...))
}

// appendOrderJSON appends o as an order object, built by hand: the winning
// path's answer costs no reflection and no allocation. Its fields and their
// order are those sonic wrote before (TestOrderJSONAsSonicWritesIt).
func appendOrderJSON(b []byte, o *engine.Order, status string) []byte {
	b = append(b, `{"order_id":"`...)
	b = strconv.AppendUint(b, o.ID, 10)
	b = append(b, `","item_id":"`...)
	b = appendJSONStringBody(b, o.ItemID)
	b = append(b, `","user_id":"`...)
	b = appendJSONStringBody(b, o.UserID)
	b = append(b, `","quantity":`...)
	b = strconv.AppendInt(b, o.Quantity, 10)
	b = append(b, `,"price_cents":`...)
	b = strconv.AppendInt(b, o.PriceCents, 10)
	b = append(b, `,"status":"`...)
	b = appendJSONStringBody(b, status)
	b = append(b, `","created_at":"`...)
	b = o.CreatedAt.UTC().AppendFormat(b, orderTimeLayout)
	return append(b, `"}`...)
}

type itemJSON struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	PriceCents   int64  `json:"price_cents"`
	StockTotal   int64  `json:"stock_total"`
	StockLeft    int64  `json:"stock_left"`
	PerUserLimit int64  `json:"per_user_limit"`
	StartsAt     string `json:"starts_at,omitempty"`
	EndsAt       string `json:"ends_at,omitempty"`
	State        string `json:"state"`
}

func toItemJSON(v engine.ItemView) itemJSON {
	return itemJSON{
		ID:           v.ID,
		Name:         v.Name,
		PriceCents:   v.PriceCents,
		StockTotal:   v.Stock,
		StockLeft:    v.StockLeft,
		PerUserLimit: v.PerUserLimit,
		StartsAt:     formatTime(v.StartsAt),
		EndsAt:       formatTime(v.EndsAt),
		State:        v.State.String(),
	}
}
