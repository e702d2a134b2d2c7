package scenario

import (
	"fmt"
	"sort"
	"strings"
)

// Check is one line of a verdict.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Verdict says whether a flash sale was sold correctly.
type Verdict struct {
	Pass   bool    `json:"pass"`
	Checks []Check `json:"checks"`
}

func (v *Verdict) add(name string, pass bool, format string, args ...any) {
	v.Checks = append(v.Checks, Check{Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)})
}

func (v Verdict) String() string {
	var b strings.Builder
	for _, c := range v.Checks {
		mark := "ok  "
		if !c.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %-34s %s\n", mark, c.Name, c.Detail)
	}
	return b.String()
}

// ServerState is what the server says after the run.
type ServerState struct {
	StockTotal, StockLeft int64
	// Orders are the server's answers to GET /api/v1/orders/{id} for every
	// order id that came back in a 201; a missing id was not found.
	Orders map[uint64]StoredOrder
}

// StoredOrder is the part of a stored order the verdict compares.
type StoredOrder struct {
	UserID, ItemID string
}

// OrderIDs are the distinct order ids answered with 201.
func (f *Flash) OrderIDs() []uint64 {
	seen := map[uint64]bool{}
	var ids []uint64
	for _, r := range f.results {
		if r.Status == 201 && r.OrderID != 0 && !seen[r.OrderID] {
			seen[r.OrderID] = true
			ids = append(ids, r.OrderID)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Judge checks the sale: no more orders than stock, exactly the stock sold
// when demand exceeds it, nobody over the limit of 1, every 201 stored as
// answered, stock_left 0 once sold out, and replays answered identically.
func (f *Flash) Judge(stock int64, srv ServerState) Verdict {
	return judge(f.specs, f.results, f.UserID, f.Item, stock, srv)
}

func judge(specs []spec, results []Result, userID func(int32) string, item string, stock int64, srv ServerState) Verdict {
	v := Verdict{Pass: true}
	orders := map[uint64]int32{} // order id -> user
	perUser := map[int32]map[uint64]bool{}
	first := map[int32]Result{} // each user's Buy answer
	unknown, unavailable := 0, 0
	users := map[int32]bool{}
	for n, s := range specs {
		if s.kind == Read {
			continue
		}
		users[s.user] = true
		r := results[n]
		switch {
		case r.Status == 0:
			unknown++
		case r.Status >= 500 || r.Status == 429:
			unavailable++ // refused: took nothing
		}
		if s.kind == Buy {
			first[s.user] = r
		}
		if r.Status == 201 && r.OrderID != 0 {
			orders[r.OrderID] = s.user
			if perUser[s.user] == nil {
				perUser[s.user] = map[uint64]bool{}
			}
			perUser[s.user][r.OrderID] = true
		}
	}
	sold := srv.StockTotal - srv.StockLeft
	demand := int64(len(users)) // per-user limit 1
	want := min(stock, demand)

	v.add("no oversell", sold <= stock && int64(len(orders)) <= stock,
		"%d units sold by the server, %d orders answered 201, stock %d", sold, len(orders), stock)
	clean := unknown == 0 && unavailable == 0
	if clean {
		v.add("exactly the stock sold", int64(len(orders)) == want && sold == want,
			"%d orders answered 201 and %d sold, want %d (%d users)", len(orders), sold, want, demand)
	} else {
		v.add("201s match what was sold", int64(len(orders)) <= sold && sold <= int64(len(orders)+unknown),
			"%d orders answered 201, %d sold, %d answers lost, %d refused (429, 5xx)", len(orders), sold, unknown, unavailable)
	}
	over := 0
	for _, ids := range perUser {
		if len(ids) > 1 {
			over++
		}
	}
	v.add("nobody over the limit", over == 0, "%d users hold more than 1 order", over)

	missing, wrong := 0, 0
	for id, u := range orders {
		got, ok := srv.Orders[id]
		switch {
		case !ok:
			missing++
		case got.UserID != userID(u) || got.ItemID != item:
			wrong++
		}
	}
	v.add("every 201 order stored", missing == 0 && wrong == 0,
		"%d of %d orders read back; %d missing, %d with other fields", len(orders)-missing-wrong, len(orders), missing, wrong)
	if demand > stock && clean {
		v.add("stock_left 0", srv.StockLeft == 0, "stock_left %d", srv.StockLeft)
	}

	replays, replayed, refused, bad := 0, 0, 0, 0
	for n, s := range specs {
		if s.kind != Retry || first[s.user].Status != 201 {
			continue
		}
		replays++
		r, f := results[n], first[s.user]
		switch {
		case r.Status == 201 && r.Replayed && r.BodyHash == f.BodyHash:
			replayed++
		case r.Status == 409: // request_in_progress: the first was still running
		case r.Status == 429 || r.Status == 503 || r.Status == 0:
			refused++ // refused before the engine looked (or lost): the client retries
		default:
			bad++
		}
	}
	v.add("replays answered identically", bad == 0,
		"%d retries of winning requests: %d identical replays, %d refused or lost, %d other answers", replays, replayed, refused, bad)
	for _, c := range v.Checks {
		v.Pass = v.Pass && c.Pass
	}
	return v
}
