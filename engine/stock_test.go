package engine

import "testing"

func TestStockTakeAcrossShards(t *testing.T) {
	s := newStock(4)
	s.spread(3) // 1,1,1,0
	if s.take(4) {
		t.Fatal("took 4 of 3")
	}
	if s.left() != 3 {
		t.Fatalf("failed take kept units: %d left", s.left())
	}
	if !s.take(3) || s.left() != 0 {
		t.Fatalf("take of all units spread over shards: %d left", s.left())
	}
	if s.take(1) {
		t.Fatal("took from empty stock")
	}
}
