package server

// Redemption codes: POST /api/v1/codes/redeem (public) and POST
// /api/v1/codes/batches (admin). A code is judged in memory before anything
// else (codes.Desk.Check); a client that keeps sending codes that are not
// valid is refused (429) before its code is even read.

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/codes"
	"github.com/flashsale/flashsale/engine"
	"github.com/flashsale/flashsale/server/admission"
)

// Codes of docs/api.md that belong to redemption codes.
const (
	codeInvalidCode engine.Code = "invalid_code"
	codeCodeExpired engine.Code = "code_expired"
	codeCodeUsed    engine.Code = "code_used"
	codeBatchExists engine.Code = "batch_exists"
)

// codesUnavailable answers where this process has no redemption desk.
const codesUnavailable = "redemption codes are not available on this server"

type redeemBody struct {
	Code   string `json:"code"`
	UserID string `json:"user_id"`
}

type redemptionJSON struct {
	Code       string `json:"code"`
	Batch      string `json:"batch"`
	Serial     uint32 `json:"serial"`
	ValueCents int64  `json:"value_cents"`
	UserID     string `json:"user_id"`
}

func (s *Server) redeem(ctx *fasthttp.RequestCtx) {
	if !jsonBody(ctx) {
		writeError(ctx, codeUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	authenticated, ok := s.shopper(ctx)
	if !ok {
		return
	}
	user := authenticated
	var b redeemBody
	if err := decodeJSON(ctx.PostBody(), &b); err != nil {
		writeError(ctx, engine.CodeInvalidRequest, "body must be a JSON object: code (string), user_id (string)")
		return
	}
	if user == "" {
		user = b.UserID
	}
	if !engine.ValidUserID(user) {
		writeError(ctx, engine.CodeInvalidRequest, "user_id must be 1-128 characters of [A-Za-z0-9_.:@-]")
		return
	}
	if s.codes == nil {
		writeError(ctx, engine.CodeUnavailable, codesUnavailable)
		return
	}
	now, ip := time.Now(), s.clientIP(ctx)
	// Failures count per IP, and per user where the user is authenticated
	// (-identity header or jwt): a user id in the body is anybody's to name.
	if blocked, wait := s.guesses.Blocked(ip, authenticated, now); blocked {
		s.metrics.redeemed.WithLabelValues("guessing").Inc()
		writeError(ctx, codeRateLimited, "too many codes that are not valid from this client or user; wait before trying again")
		var buf [20]byte
		ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], int64(admission.RetryAfter(wait)), 10))
		return
	}
	r, replayed, err := s.codes.Redeem(context.Background(), b.Code, user)
	switch {
	case err == nil:
	case errors.Is(err, codes.ErrInvalid):
		s.guesses.Failed(ip, authenticated, now)
		s.metrics.redeemed.WithLabelValues(string(codeInvalidCode)).Inc()
		writeError(ctx, codeInvalidCode, "not a valid code: check it for typos")
		return
	case errors.Is(err, codes.ErrExpired):
		s.metrics.redeemed.WithLabelValues(string(codeCodeExpired)).Inc()
		writeError(ctx, codeCodeExpired, "the code has expired")
		return
	case errors.Is(err, codes.ErrUsed):
		s.metrics.redeemed.WithLabelValues(string(codeCodeUsed)).Inc()
		writeError(ctx, codeCodeUsed, "the code was redeemed by another user")
		return
	case errors.Is(err, codes.ErrInProgress):
		s.metrics.redeemed.WithLabelValues(string(engine.CodeRequestInProgress)).Inc()
		writeError(ctx, engine.CodeRequestInProgress, "the code is being redeemed; retry shortly")
		return
	case errors.Is(err, codes.ErrNoKeys):
		writeError(ctx, engine.CodeUnavailable, "redemption codes are not configured on this server (operators: -codes-secret-file)")
		return
	default:
		s.errLog.Error("cannot redeem a code", "err", err)
		s.metrics.redeemed.WithLabelValues(string(engine.CodeUnavailable)).Inc()
		writeError(ctx, engine.CodeUnavailable, "the code store is unavailable; nothing was redeemed, retry later")
		return
	}
	if replayed {
		ctx.Response.Header.Set("Idempotent-Replayed", "true")
		s.metrics.redeemed.WithLabelValues("replayed").Inc()
	} else {
		s.metrics.redeemed.WithLabelValues("redeemed").Inc()
	}
	rj := redemptionJSON{Code: r.Code, Batch: r.Batch, Serial: r.Serial, ValueCents: r.ValueCents, UserID: r.UserID}
	writeJSON(ctx, fasthttp.StatusOK, &rj)
}

type batchBody struct {
	Batch      *string `json:"batch"`
	Count      *int    `json:"count"`
	ValueCents *int64  `json:"value_cents"`
	ExpiresAt  *string `json:"expires_at"`
}

type batchJSON struct {
	Batch      string   `json:"batch"`
	Number     uint32   `json:"number"`
	Key        uint8    `json:"key"`
	Count      int      `json:"count"`
	ValueCents int64    `json:"value_cents"`
	ExpiresAt  string   `json:"expires_at,omitempty"`
	Codes      []string `json:"codes"`
}

const batchBodyHelp = "body must be a JSON object: batch (string, 1-64 of [A-Za-z0-9_-]), count (1-100000), value_cents (integer), expires_at (RFC 3339, optional)"

func (s *Server) createBatch(ctx *fasthttp.RequestCtx) {
	if !jsonBody(ctx) {
		writeError(ctx, codeUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	if s.codes == nil {
		writeError(ctx, engine.CodeUnavailable, codesUnavailable)
		return
	}
	var b batchBody
	if err := sonic.ConfigStd.Unmarshal(ctx.PostBody(), &b); err != nil || b.Batch == nil || b.Count == nil || b.ValueCents == nil {
		writeError(ctx, engine.CodeInvalidRequest, batchBodyHelp)
		return
	}
	if !engine.ValidItemID(*b.Batch) {
		writeError(ctx, engine.CodeInvalidRequest, "batch must be 1-64 characters of [A-Za-z0-9_-]")
		return
	}
	expires, err := parseTime("expires_at", b.ExpiresAt)
	if err != nil {
		writeError(ctx, engine.CodeInvalidRequest, err.Error())
		return
	}
	ioCtx, cancel := s.ioContext(ctx)
	defer cancel()
	batch, list, created, err := s.codes.CreateBatch(ioCtx, *b.Batch, *b.Count, *b.ValueCents, expires)
	switch {
	case err == nil:
	case errors.Is(err, codes.ErrBatchExists):
		writeError(ctx, codeBatchExists, "batch ", *b.Batch, " exists with another count, value or expiry")
		return
	case errors.Is(err, codes.ErrNoKeys):
		writeError(ctx, engine.CodeUnavailable, "redemption codes are not configured on this server (operators: -codes-secret-file)")
		return
	case errors.Is(err, codes.ErrUnavailable):
		s.errLog.Error("cannot create a batch of codes", "batch", *b.Batch, "err", err)
		writeError(ctx, engine.CodeUnavailable, "the code store is unavailable; nothing was created, retry later")
		return
	default:
		writeError(ctx, engine.CodeInvalidRequest, strings.TrimPrefix(err.Error(), "codes: "))
		return
	}
	status := fasthttp.StatusOK // the same request again: the same codes
	if created {
		status = fasthttp.StatusCreated
	}
	bj := batchJSON{Batch: batch.Name, Number: batch.Number, Key: batch.Key, Count: batch.Count, ValueCents: batch.ValueCents, Codes: list}
	if !batch.Expires.IsZero() {
		bj.ExpiresAt = batch.Expires.Format(time.RFC3339)
	}
	writeJSON(ctx, status, &bj)
}
