package server

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/flashsale/flashsale/engine"
)

// IdentityMode says where a shopper's user id comes from.
type IdentityMode uint8

const (
	// IdentityBody takes user_id from the request body: anyone can claim
	// any user. For load tests and trusted networks only.
	IdentityBody IdentityMode = iota
	// IdentityHeader takes the user id from a header set by a gateway that
	// authenticated the shopper, believed only from trusted proxies.
	IdentityHeader
	// IdentityJWT takes it from the subject of a signed token (HMAC) in
	// Authorization: Bearer, which must carry an expiry.
	IdentityJWT
)

// ParseIdentityMode reads -identity.
func ParseIdentityMode(s string) (IdentityMode, error) {
	switch s {
	case "body":
		return IdentityBody, nil
	case "header":
		return IdentityHeader, nil
	case "jwt":
		return IdentityJWT, nil
	}
	return 0, fmt.Errorf("-identity %q: use body, header or jwt", s)
}

// The defaults of Identity.
const (
	DefaultIdentityHeader = "X-User-Id"      // the header of IdentityHeader
	DefaultJWTLeeway      = 30 * time.Second // the command's clock skew allowed on a token
)

// Identity configures how shoppers are identified.
type Identity struct {
	Mode      IdentityMode
	Header    string        // IdentityHeader: the header; default DefaultIdentityHeader
	JWTSecret []byte        // IdentityJWT: the HMAC key, at least 32 bytes
	JWTLeeway time.Duration // IdentityJWT: clock skew allowed on exp and nbf
}

// Validate checks the rules that span fields.
func (id Identity) Validate(trustedProxies int) error {
	switch id.Mode {
	case IdentityHeader:
		if trustedProxies == 0 {
			return errors.New("-identity=header needs -trusted-proxies: the header is believed only from them")
		}
	case IdentityJWT:
		if len(id.JWTSecret) < 32 {
			return errors.New("-identity=jwt needs -jwt-secret-file holding at least 32 bytes")
		}
	}
	return nil
}

var jwtMethods = []string{"HS256", "HS384", "HS512"}

// shopper returns the authenticated user id, or answers 401 and returns
// false. In body mode it returns "" and true: the body names the user.
func (s *Server) shopper(ctx *fasthttp.RequestCtx) (string, bool) {
	id := s.opts.Identity
	switch id.Mode {
	case IdentityHeader:
		user := b2s(ctx.Request.Header.Peek(id.Header))
		switch {
		case !s.trusted(peerAddr(ctx)):
			s.unauthorized(ctx, "", "the user identity header is accepted only from a trusted proxy")
		case !engine.ValidUserID(user):
			s.unauthorized(ctx, "", "the request has no valid ", id.Header, " header")
		default:
			return user, true
		}
		return "", false
	case IdentityJWT:
		auth := ctx.Request.Header.Peek("Authorization")
		raw, found := bytes.CutPrefix(auth, []byte("Bearer "))
		if !found || len(raw) == 0 {
			s.unauthorized(ctx, `Bearer realm="flashsale"`, "Authorization: Bearer <token> is required")
			return "", false
		}
		tok, err := jwt.Parse(string(raw), func(*jwt.Token) (any, error) { return id.JWTSecret, nil },
			jwt.WithValidMethods(jwtMethods), jwt.WithExpirationRequired(), jwt.WithLeeway(id.JWTLeeway))
		if err != nil {
			s.unauthorized(ctx, `Bearer realm="flashsale", error="invalid_token"`, "the token is not valid: ", strings.TrimPrefix(err.Error(), "token has invalid claims: "))
			return "", false
		}
		sub, _ := tok.Claims.GetSubject()
		if !engine.ValidUserID(sub) {
			s.unauthorized(ctx, `Bearer realm="flashsale", error="invalid_token"`, "the token's subject is not a valid user id")
			return "", false
		}
		return sub, true
	}
	return "", true
}

func (s *Server) unauthorized(ctx *fasthttp.RequestCtx, challenge string, msg ...string) {
	if challenge != "" {
		ctx.Response.Header.Set("WWW-Authenticate", challenge)
	}
	writeError(ctx, codeUnauthorized, msg...)
}
