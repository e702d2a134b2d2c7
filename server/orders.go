package server

import (
	"errors"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

func (s *Server) getOrder(ctx *fasthttp.RequestCtx) {
	raw := pathParam(ctx, "order_id")
	id, err := strconv.ParseUint(raw, 10, 63)
	if errors.Is(err, strconv.ErrRange) { // a number no order id can be
		writeError(ctx, codeOrderNotFound, "no order ", raw)
		return
	}
	if err != nil {
		writeError(ctx, engine.CodeInvalidRequest, "order id must be a decimal number")
		return
	}
	ioCtx, cancel := s.ioContext(ctx)
	defer cancel()
	o, ok, err := s.orders.Order(ioCtx, id)
	if ok && s.opts.Identity.Mode != IdentityBody {
		// Shoppers see only their own orders; another's does not exist.
		user, authed := s.shopper(ctx)
		if !authed {
			return
		}
		ok = o.UserID == user
	}
	switch {
	case err != nil:
		s.errLog.Error("cannot read order", "order", id, "err", err)
		writeError(ctx, engine.CodeUnavailable, "the order store is unavailable; retry later")
	case !ok:
		writeError(ctx, codeOrderNotFound, "no order ", raw)
	default:
		writeOrder(ctx, fasthttp.StatusOK, o, o.Status.String())
	}
}

func (s *Server) userOrders(ctx *fasthttp.RequestCtx) {
	user := pathParam(ctx, "user_id")
	if !engine.ValidUserID(user) {
		writeError(ctx, engine.CodeInvalidRequest, engine.ErrBadUserID.Message())
		return
	}
	if s.opts.Identity.Mode != IdentityBody {
		me, authed := s.shopper(ctx)
		if !authed {
			return
		}
		if me != user {
			s.unauthorized(ctx, "", "shoppers can read only their own orders")
			return
		}
	}
	ioCtx, cancel := s.ioContext(ctx)
	defer cancel()
	orders, err := s.orders.UserOrders(ioCtx, user)
	if err != nil {
		s.errLog.Error("cannot read orders", "user", user, "err", err)
		writeError(ctx, engine.CodeUnavailable, "the order store is unavailable; retry later")
		return
	}
	writeOrderList(ctx, orders)
}
