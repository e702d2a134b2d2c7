package server

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

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
	if !s.eng.LocalBoards() {
		writeError(ctx, engine.CodeUnavailable, "the leaderboard is not available in cluster mode yet")
		return
	}
	entries, err := s.eng.Leaderboard(id, limit)
	if err != nil {
		writeError(ctx, engine.CodeItemNotFound, "no item ", id)
		return
	}
	lj := leaderboardJSON{ItemID: id, Entries: make([]entryJSON, len(entries))}
	for i, e := range entries {
		lj.Entries[i] = entryJSON{Rank: e.Rank, UserID: e.UserID, MsAfterStart: e.MsAfterStart}
	}
	writeJSON(ctx, fasthttp.StatusOK, &lj)
}
