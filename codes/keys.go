package codes

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LoadKeyring reads secrets from files, as the command's -codes-secret-file
// gives them: a comma-separated list of <key id>:<path> (key ids 0-255; a
// lone path is key id 1). Each file holds one secret of at least 32 bytes
// (a trailing newline is not part of it), e.g. made with
//
//	head -c 32 /dev/urandom | base64 > /etc/flashsale/codes-1.key
//
// New codes are signed with the highest key id; codes of every listed key
// still verify. Rotate by adding a file with a higher id, and drop an old
// one once its codes have expired.
func LoadKeyring(spec string) (*Keyring, error) {
	secrets := map[uint8][]byte{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, path := "1", part
		if before, after, ok := strings.Cut(part, ":"); ok {
			id, path = before, after
		}
		n, err := strconv.ParseUint(id, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("codes: key id %q of %q: want 0-255", id, part)
		}
		if _, dup := secrets[uint8(n)]; dup {
			return nil, fmt.Errorf("codes: key id %d given twice", n)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("codes: cannot read the secret of key %d: %w", n, err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) < MinSecret {
			return nil, fmt.Errorf("codes: the secret in %s has %d bytes, want at least %d", path, len(b), MinSecret)
		}
		secrets[uint8(n)] = b
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("codes: no secret file in %q", spec)
	}
	return NewKeyring(secrets)
}
