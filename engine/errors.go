package engine

import "errors"

// Code is the machine-readable reason for a refusal. The values are the error
// codes of the HTTP contract (docs/api.md), so the front maps them in one place.
type Code string

const (
	CodeInvalidRequest       Code = "invalid_request"
	CodeItemNotFound         Code = "item_not_found"
	CodeSoldOut              Code = "sold_out"
	CodeLimitExceeded        Code = "limit_exceeded"
	CodeSaleNotStarted       Code = "sale_not_started"
	CodeSaleEnded            Code = "sale_ended"
	CodeRequestInProgress    Code = "request_in_progress"
	CodeIdempotencyKeyReused Code = "idempotency_key_reused"
	CodeStockBelowSold       Code = "stock_below_sold"
	CodeUnavailable          Code = "unavailable"
)

// Error is a refusal with a code. The sentinel values below are compared with
// errors.Is; a refusal never carries per-request data, so returning one costs
// no allocation on the paths that answer losers.
type Error struct {
	Code Code
	msg  string
}

func (e *Error) Error() string { return "engine: " + e.msg }

var (
	ErrItemNotFound         = &Error{CodeItemNotFound, "item not found"}
	ErrSoldOut              = &Error{CodeSoldOut, "sold out"}
	ErrLimitExceeded        = &Error{CodeLimitExceeded, "per-user limit reached"}
	ErrSaleNotStarted       = &Error{CodeSaleNotStarted, "sale not started"}
	ErrSaleEnded            = &Error{CodeSaleEnded, "sale ended"}
	ErrRequestInProgress    = &Error{CodeRequestInProgress, "request in progress"}
	ErrIdempotencyKeyReused = &Error{CodeIdempotencyKeyReused, "request id reused with a different request"}
	ErrStockBelowSold       = &Error{CodeStockBelowSold, "stock below units sold or reserved"}

	ErrBadItemID    = &Error{CodeInvalidRequest, "item id must be 1-64 characters of [A-Za-z0-9_-]"}
	ErrBadUserID    = &Error{CodeInvalidRequest, "user_id must be 1-128 characters of [A-Za-z0-9_.:@-]"}
	ErrBadRequestID = &Error{CodeInvalidRequest, "request_id must be 1-128 printable ASCII characters without spaces"}
	ErrBadQuantity  = &Error{CodeInvalidRequest, "quantity must be at least 1 and at most the item's per_user_limit"}

	// ErrUnavailable is wrapped around the failure of a dependency (ledger,
	// order sink, catalogue): nothing was taken, the client may retry.
	ErrUnavailable = &Error{CodeUnavailable, "dependency unavailable"}

	// ErrLedgerLost: the cluster's shared ledger lost its data (or is not
	// the one this node sold from) and is being rebuilt from the orders of
	// record; nothing is sold until it is (Engine.SetLedgerLost).
	ErrLedgerLost = &Error{CodeUnavailable, "the stock ledger is being rebuilt from the orders of record"}
)

// ErrNotLeased is what a Ledger's Claim answers when this node holds fewer
// units of the item than its shards say (its lease belonged to a ledger that
// was lost): the engine drops those units instead of putting them back.
var ErrNotLeased = errors.New("engine: the ledger says this node does not hold those units")

// ErrOrderStored is what Ledger.Unclaim answers when the claim cannot be
// undone because the order reached the order database after all (a Kafka
// produce that failed for the producer but landed): the purchase stands.
var ErrOrderStored = errors.New("engine: the order was stored after all")

// CodeOf returns the code of err, or "" when err is not a refusal of the engine.
func CodeOf(err error) Code {
	if e, ok := err.(*Error); ok { // refusals come bare: no allocation
		return e.Code
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Message is the human-readable text, without the package prefix.
func (e *Error) Message() string { return e.msg }
