package engine

// Identifier rules of the HTTP contract. They live in the engine because the
// engine relies on them: validated ids fit the fixed buffers of the hot path.

const (
	MaxItemIDLen    = 64
	MaxUserIDLen    = 128
	MaxRequestIDLen = 128
)

var itemIDChars, userIDChars [256]bool

func init() {
	for c := 0; c < 256; c++ {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		itemIDChars[c] = alnum || c == '_' || c == '-'
		userIDChars[c] = alnum || c == '_' || c == '-' || c == '.' || c == ':' || c == '@'
	}
}

func validID(s string, max int, allowed *[256]bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !allowed[s[i]] {
			return false
		}
	}
	return true
}

// ValidItemID reports whether s is 1-64 characters of [A-Za-z0-9_-].
func ValidItemID(s string) bool { return validID(s, MaxItemIDLen, &itemIDChars) }

// ValidUserID reports whether s is 1-128 characters of [A-Za-z0-9_.:@-].
func ValidUserID(s string) bool { return validID(s, MaxUserIDLen, &userIDChars) }

// ValidRequestID reports whether s is 1-128 printable ASCII characters, no spaces.
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
