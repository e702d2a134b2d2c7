package server

import "sync"

// pool is a typed sync.Pool. The rules for every pooled object here: each Get
// has one Put, Put happens after the last use, the object is reset before
// reuse, and oversized objects are dropped instead of put back.
type pool[T any] struct{ p sync.Pool }

func newPool[T any](newT func() T) *pool[T] {
	return &pool[T]{p: sync.Pool{New: func() any { return newT() }}}
}

func (p *pool[T]) Get() T  { return p.p.Get().(T) }
func (p *pool[T]) Put(v T) { p.p.Put(v) }
