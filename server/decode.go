package server

import (
	"bytes"

	"github.com/bytedance/sonic/decoder"
	"github.com/valyala/fasthttp"
)

// decoders validate strings: without it sonic skips raw control characters
// in unknown keys, and invalid JSON must get 400 (found by FuzzDecodePurchase).
var decoders = newPool(func() *decoder.Decoder {
	d := decoder.NewDecoder("")
	d.ValidateString()
	return d
})

// decodeJSON decodes one JSON value from body into v and refuses trailing
// data. A pooled decoder makes this allocation-free; strings in v may alias
// body (sonic does not copy strings without escapes), so v is only valid
// while body is, unless the caller copies.
func decodeJSON(body []byte, v any) error {
	d := decoders.Get()
	d.Reset(b2s(body))
	err := d.Decode(v)
	if err == nil {
		err = d.CheckTrailings()
	}
	d.Reset("") // keep no reference to the request in the pool
	decoders.Put(d)
	return err
}

// jsonBody reports whether the request's Content-Type allows a JSON body: a
// missing one does, and so does application/json with parameters.
func jsonBody(ctx *fasthttp.RequestCtx) bool {
	ct := ctx.Request.Header.ContentType()
	if len(ct) == 0 {
		return true
	}
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), jsonContentType)
}
