// Command bare is the ceiling of the performance budget: a fasthttp server
// whose handler does nothing but answer a small JSON body, with the limits
// flashsale sets. wrk against it measures the machine and the client, so
// flashsale's figures can be given as a ratio of it (tuning.md).
package main

import (
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve on")
	flag.Parse()
	body := []byte(`{"error":{"code":"sold_out","message":"item phone-1 is sold out"}}`)
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.SetContentType("application/json")
			ctx.Response.Header.Set("X-Request-Id", "0123456789abcdef-1")
			ctx.SetStatusCode(fasthttp.StatusConflict)
			ctx.SetBody(body)
		},
		ReadBufferSize:        8 << 10,
		MaxRequestBodySize:    4 << 10,
		ReadTimeout:           5 * time.Second,
		WriteTimeout:          5 * time.Second,
		IdleTimeout:           60 * time.Second,
		NoDefaultServerHeader: true,
	}
	log.Printf("bare fasthttp handler on %s", *listen)
	log.Fatal(s.ListenAndServe(*listen))
}
