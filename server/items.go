package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

func pathParam(ctx *fasthttp.RequestCtx, name string) string {
	v, _ := ctx.UserValue(name).(string)
	return v
}

// itemIDParam returns the {id} of the path, or answers 400 when it is not a
// valid item id.
func itemIDParam(ctx *fasthttp.RequestCtx) (string, bool) {
	id := pathParam(ctx, "id")
	if !engine.ValidItemID(id) {
		writeError(ctx, engine.CodeInvalidRequest, engine.ErrBadItemID.Message())
		return "", false
	}
	return id, true
}

func (s *Server) getItem(ctx *fasthttp.RequestCtx) {
	id, ok := itemIDParam(ctx)
	if !ok {
		return
	}
	v, ok := s.eng.Item(id)
	if !ok {
		writeError(ctx, engine.CodeItemNotFound, "no item ", id)
		return
	}
	ij := toItemJSON(v)
	writeJSON(ctx, fasthttp.StatusOK, &ij)
}

func (s *Server) listItems(ctx *fasthttp.RequestCtx) {
	views := s.eng.Items()
	list := itemListJSON{Items: make([]itemJSON, len(views))}
	for i, v := range views {
		list.Items[i] = toItemJSON(v)
	}
	writeJSON(ctx, fasthttp.StatusOK, &list)
}

// itemListJSON is the answer of GET /api/v1/items.
type itemListJSON struct {
	Items []itemJSON `json:"items"`
}

// itemBody is the request of PUT /api/v1/items/{id}. Pointers tell a field
// that is missing from one that is zero.
type itemBody struct {
	Name         *string `json:"name"`
	PriceCents   *int64  `json:"price_cents"`
	Stock        *int64  `json:"stock"`
	PerUserLimit *int64  `json:"per_user_limit"`
	StartsAt     *string `json:"starts_at"`
	EndsAt       *string `json:"ends_at"`
}

const itemBodyHelp = "body must be a JSON object: name (string), price_cents (integer), stock (integer), per_user_limit (integer, default 1), starts_at and ends_at (RFC 3339, optional)"

// parseItem reads an item definition. It copies every string (ConfigStd),
// since the item outlives the request.
func parseItem(id string, body []byte) (engine.Item, error) {
	var b itemBody
	if err := sonic.ConfigStd.Unmarshal(body, &b); err != nil {
		return engine.Item{}, errors.New(itemBodyHelp)
	}
	if b.Name == nil || b.PriceCents == nil || b.Stock == nil {
		return engine.Item{}, errors.New("name, price_cents and stock are required")
	}
	it := engine.Item{ID: strings.Clone(id), Name: *b.Name, PriceCents: *b.PriceCents, Stock: *b.Stock, PerUserLimit: 1}
	if b.PerUserLimit != nil {
		it.PerUserLimit = *b.PerUserLimit
	}
	var err error
	if it.StartsAt, err = parseTime("starts_at", b.StartsAt); err != nil {
		return engine.Item{}, err
	}
	if it.EndsAt, err = parseTime("ends_at", b.EndsAt); err != nil {
		return engine.Item{}, err
	}
	return it, it.Validate()
}

func parseTime(field string, s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s must be an RFC 3339 time, like 2026-11-11T12:00:00Z", field)
	}
	return t.UTC(), nil
}

func (s *Server) putItem(ctx *fasthttp.RequestCtx) {
	id, ok := itemIDParam(ctx)
	if !ok {
		return
	}
	if !jsonBody(ctx) {
		writeError(ctx, codeUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	it, err := parseItem(id, ctx.PostBody())
	if err != nil {
		writeError(ctx, engine.CodeInvalidRequest, strings.TrimPrefix(err.Error(), "engine: "))
		return
	}
	ioCtx, cancel := s.ioContext(ctx)
	defer cancel()
	before, existed := s.eng.Item(id)
	v, created, err := s.eng.PutItem(ioCtx, it)
	switch code := engine.CodeOf(err); {
	case err == nil:
	case code == engine.CodeStockBelowSold:
		writeError(ctx, code, fmt.Sprintf("stock %d of item %s is below the units already sold or reserved", it.Stock, id))
		return
	case errors.Is(err, engine.ErrLedgerLost):
		writeError(ctx, engine.CodeUnavailable, ledgerLostMessage, "nothing was changed, retry later")
		return
	case code == engine.CodeUnavailable:
		s.errLog.Error("cannot save item", "item", id, "err", err)
		writeError(ctx, code, dependencyOf(err, "the item store"), " is unavailable; nothing was changed, retry later")
		return
	default:
		writeError(ctx, code, strings.TrimPrefix(err.Error(), "engine: "))
		return
	}
	if !existed || v.Stock > before.Stock { // new stock for sale: warm up again
		s.limits.Rewarm(id, time.Now())
	}
	status := fasthttp.StatusOK
	if created {
		status = fasthttp.StatusCreated
		ctx.Response.Header.Set("Location", "/api/v1/items/"+id)
	}
	ij := toItemJSON(v)
	writeJSON(ctx, status, &ij)
}

func (s *Server) deleteItem(ctx *fasthttp.RequestCtx) {
	id, ok := itemIDParam(ctx)
	if !ok {
		return
	}
	ioCtx, cancel := s.ioContext(ctx)
	defer cancel()
	_, err := s.eng.EndItem(ioCtx, id)
	switch engine.CodeOf(err) {
	case "":
		if err != nil {
			s.errLog.Error("BUG: ending an item failed unexpectedly", "item", id, "err", err)
			writeError(ctx, codeInternal, "internal error")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case engine.CodeItemNotFound:
		writeError(ctx, engine.CodeItemNotFound, "no item ", id)
	default:
		if errors.Is(err, engine.ErrLedgerLost) {
			writeError(ctx, engine.CodeUnavailable, ledgerLostMessage, "nothing was changed, retry later")
			return
		}
		s.errLog.Error("cannot end item", "item", id, "err", err)
		writeError(ctx, engine.CodeUnavailable, dependencyOf(err, "the item store"), " is unavailable; nothing was changed, retry later")
	}
}
