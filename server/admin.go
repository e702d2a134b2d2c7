package server

import "github.com/valyala/fasthttp"

// adminHandler is the edge's admin listener: item management, and what
// every admin listener serves (front.go: /metrics, pprof, health), behind
// the bearer token when one is set.
func (s *Server) adminHandler() fasthttp.RequestHandler {
	r := s.newRouter()
	r.PUT("/api/v1/items/{id}", s.instrument("admin_item", s.putItem))
	r.DELETE("/api/v1/items/{id}", s.instrument("admin_item", s.deleteItem))
	r.GET("/api/v1/items", s.instrument("admin_items", s.listItems))
	r.GET("/api/v1/items/{id}", s.instrument("admin_item", s.getItem))
	r.POST("/api/v1/codes/batches", s.instrument("admin_code_batches", s.createBatch))
	s.adminRoutes(r)
	return s.adminGate(r.Handler)
}
