package server

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

// Boards reads a cluster's leaderboards (redisledger.Ledger): each item's
// first buyers' first orders, by order id.
type Boards interface {
	Leaders(ctx context.Context, item string) ([]engine.BoardEntry, error)
}

type leaderboardJSON struct {
	ItemID  string      `json:"item_id"`
	Entries []entryJSON `json:"entries"`
}

type entryJSON struct {
	Rank         int    `json:"rank"`
	UserID       string `json:"user_id"`
	MsAfterStart int64  `json:"ms_after_start"`
}

// leaderboard answers GET /api/v1/items/{id}/leaderboard?limit=N: the
// item's fastest buyers (default 10, at most engine.BoardSize).
func (s *Server) leaderboard(ctx *fasthttp.RequestCtx) {
	id, ok := itemIDParam(ctx)
	if !ok {
		return
	}
	limit := 10
	if raw := ctx.QueryArgs().Peek("limit"); raw != nil {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 1 || n > engine.BoardSize {
			writeError(ctx, engine.CodeInvalidRequest, "limit must be an integer from 1 to ", strconv.Itoa(engine.BoardSize))
			return
		}
		limit = n
	}
	var entries []engine.LeaderEntry
	if s.boards == nil { // standalone: the engine's
		var err error
		if entries, err = s.eng.Leaderboard(id, limit); err != nil {
			writeError(ctx, engine.CodeItemNotFound, "no item ", id)
			return
		}
	} else { // a cluster's: the writers keep it in Redis
		v, ok := s.eng.Item(id)
		if !ok {
			writeError(ctx, engine.CodeItemNotFound, "no item ", id)
			return
		}
		ioCtx, cancel := s.ioContext(ctx)
		firsts, err := s.boards.Leaders(ioCtx, id)
		cancel()
		if err != nil {
			s.errLog.Error("cannot read a leaderboard", "item", id, "err", err)
			writeError(ctx, engine.CodeUnavailable, "the leaderboard store is unavailable; retry later")
			return
		}
		entries = engine.Rank(&v.Item, firsts, limit)
	}
	lj := leaderboardJSON{ItemID: id, Entries: make([]entryJSON, len(entries))}
	for i, e := range entries {
		lj.Entries[i] = entryJSON{Rank: e.Rank, UserID: e.UserID, MsAfterStart: e.MsAfterStart}
	}
	writeJSON(ctx, fasthttp.StatusOK, &lj)
}
