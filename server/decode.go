package server

import (
	"bytes"
	"reflect"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/decoder"
	"github.com/valyala/fasthttp"
)

// jsonTypes are the types sonic decodes and encodes for requests. sonic
// compiles a type's codec the first time it meets one (~5 ms for the
// purchase body on the development machine), and a flash sale's first
// requests are its rush: New compiles them all before the server serves.
var jsonTypes = []reflect.Type{
	reflect.TypeFor[purchaseBody](), reflect.TypeFor[redeemBody](), reflect.TypeFor[itemBody](),
	reflect.TypeFor[batchBody](), reflect.TypeFor[itemJSON](), reflect.TypeFor[itemListJSON](),
	reflect.TypeFor[leaderboardJSON](), reflect.TypeFor[redemptionJSON](), reflect.TypeFor[batchJSON](),
}

// compileJSON compiles the codecs of jsonTypes; types compiled before cost
// a look-up each.
func compileJSON() error { return sonic.PretouchMany(jsonTypes) }

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
