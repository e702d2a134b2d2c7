// Package codes makes and checks redemption codes: self-contained and
// signed, so that a code is judged (invalid, expired, or well-formed and
// genuine) in memory, with no I/O and no allocation, before any store is
// touched. Whether a genuine code was already used is the stores' business,
// not this package's.
//
// A code is 80 bits of fields and a 40-bit signature, written as 24
// characters of Crockford's Base32 and a check character, in five groups of
// five:
//
//	byte 0        key id: the secret that signed it (rotation)
//	bytes 1-9     batch (22 bits), serial (22 bits), expiry (28 bits: minutes
//	              since 2024-01-01 UTC, all ones for none), packed big-endian
//	bytes 10-15   the first 5 bytes of HMAC-SHA-256(secret, bytes 0-9 || "flashsale-code-v1")
//	check         (sum of (i+1) * value of character i) mod 31, over the 24
//
// The check character catches a mistyped character or two swapped ones
// before the signature is computed (but for 0 and Z, whose values are equal
// modulo 31: the signature catches those); both are invalid_code to a
// client. A guesser who knows a batch
// and a serial still has to guess 40 bits: one chance in 2^40 (about 1.1
// million million) per attempt, and attempts are rate-limited by the server.
//
// Reading is lenient as Crockford's alphabet is: case does not matter,
// hyphens and spaces are ignored, I and L read as 1, O as 0.
package codes

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"time"
)

// Field limits.
const (
	MaxBatch  = 1<<22 - 1 // batch numbers are 1..MaxBatch
	MaxSerial = 1<<22 - 1 // serials are 0..MaxSerial
	maxMins   = 1<<28 - 1 // no expiry
)

// Epoch is the start of the expiry's minutes.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Latest is the latest expiry a code can carry.
var Latest = minutes(maxMins - 1)

// minutes is the time m minutes after Epoch.
func minutes(m uint64) time.Time { return time.Unix(Epoch.Unix()+int64(m)*60, 0).UTC() }

// Code is what a code says.
type Code struct {
	Key     uint8
	Batch   uint32    // 1..MaxBatch
	Serial  uint32    // 0..MaxSerial
	Expires time.Time // zero: never; else a whole minute (UTC)
}

// Len is the length of a code as written: 25 characters and 4 hyphens.
const Len = 25 + 4

const (
	rawLen   = 15 // bytes
	fieldLen = 10
	macLen   = rawLen - fieldLen
	chars    = 24 // Base32 characters of the 15 bytes
)

// Errors of Check.
var (
	// ErrInvalid: not a code (length, alphabet, check character, unknown key
	// or signature).
	ErrInvalid = errors.New("codes: not a valid code")
	// ErrExpired: a genuine code past its expiry.
	ErrExpired = errors.New("codes: the code has expired")
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ" // Crockford's Base32

// values maps a character to its value, -1 for none, -2 to skip.
var values [256]int8

func init() {
	for i := range values {
		values[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		values[alphabet[i]] = int8(i)
		values[alphabet[i]|0x20] = int8(i) // lower case
	}
	for _, c := range "Oo" {
		values[c] = 0
	}
	for _, c := range "IiLl" {
		values[c] = 1
	}
	values['-'], values[' '] = -2, -2
}

// Keyring holds the secrets codes are signed with, by key id; the highest
// id signs new codes. It is safe for concurrent use.
type Keyring struct {
	keys   [256]*key
	newest int // -1: none
}

type key struct {
	macs sync.Pool // of *mac
}

// mac is one HMAC state and room for its sum: checking a code allocates
// nothing once the pool is warm.
type mac struct {
	h      hash.Hash
	fields [fieldLen]byte // what is signed, copied here so the caller's stays on its stack
	sum    [sha256.Size]byte
}

// MinSecret is the least length of a secret, in bytes.
const MinSecret = 32

// NewKeyring returns a keyring of secrets by key id.
func NewKeyring(secrets map[uint8][]byte) (*Keyring, error) {
	k := &Keyring{newest: -1}
	for id, s := range secrets {
		if len(s) < MinSecret {
			return nil, errors.New("codes: a secret must have at least 32 bytes")
		}
		secret := append([]byte(nil), s...)
		k.keys[id] = &key{macs: sync.Pool{New: func() any { return &mac{h: hmac.New(sha256.New, secret)} }}}
		k.newest = max(k.newest, int(id))
	}
	if k.newest < 0 {
		return nil, errors.New("codes: no secret")
	}
	return k, nil
}

// Newest is the key id new codes are signed with.
func (k *Keyring) Newest() uint8 { return uint8(k.newest) }

// sign writes the signature of raw's fields into raw; false for an unknown
// key.
func (k *Keyring) sign(raw *[rawLen]byte, into *[macLen]byte) bool {
	kk := k.keys[raw[0]]
	if kk == nil {
		return false
	}
	m := kk.macs.Get().(*mac)
	m.h.Reset()
	copy(m.fields[:], raw[:fieldLen])
	m.h.Write(m.fields[:])
	m.h.Write(domain)
	m.h.Sum(m.sum[:0])
	copy(into[:], m.sum[:macLen])
	kk.macs.Put(m)
	return true
}

var domain = []byte("flashsale-code-v1")

// Make writes code c, signed with its key, into dst (appended). It fails on
// fields out of range or an unknown key.
func (k *Keyring) Make(dst []byte, c Code) ([]byte, error) {
	if c.Batch < 1 || c.Batch > MaxBatch || c.Serial > MaxSerial {
		return dst, errors.New("codes: batch or serial out of range")
	}
	mins := uint64(maxMins)
	if !c.Expires.IsZero() {
		if c.Expires.Before(Epoch) || c.Expires.After(Latest) {
			return dst, errors.New("codes: expiry out of range (2024 onwards)")
		}
		mins = uint64(c.Expires.Unix()-Epoch.Unix()) / 60
	}
	var raw [rawLen]byte
	raw[0] = c.Key
	// 72 bits, 22 + 22 + 28: the first 64 in bytes 1-8, the last 8 in byte 9
	binary.BigEndian.PutUint64(raw[1:9], uint64(c.Batch)<<42|uint64(c.Serial)<<20|mins>>8)
	raw[9] = byte(mins)
	var sig [macLen]byte
	if !k.sign(&raw, &sig) {
		return dst, errors.New("codes: unknown key id")
	}
	copy(raw[fieldLen:], sig[:])
	return appendText(dst, &raw), nil
}

// appendText writes raw as 24 Base32 characters and the check character,
// in groups of five.
func appendText(dst []byte, raw *[rawLen]byte) []byte {
	var text [chars + 1]byte
	var acc uint64
	bits, n, sum := 0, 0, 0
	for _, b := range raw {
		acc = acc<<8 | uint64(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			v := int(acc>>bits) & 31
			text[n] = alphabet[v]
			n++
			sum += n * v
		}
	}
	text[chars] = alphabet[sum%31]
	for i, c := range text {
		if i > 0 && i%5 == 0 {
			dst = append(dst, '-')
		}
		dst = append(dst, c)
	}
	return dst
}

// Check reads and verifies s at now: the code it is, ErrInvalid, or
// ErrExpired (with the code, which is genuine). It allocates nothing.
func (k *Keyring) Check(s string, now time.Time) (Code, error) {
	if len(s) > 2*Len {
		return Code{}, ErrInvalid
	}
	var raw [rawLen]byte
	var acc uint64
	bits, n, sum, i := 0, 0, 0, 0
	for ; i < len(s) && n < chars; i++ {
		v := values[s[i]]
		if v == -2 {
			continue
		}
		if v < 0 {
			return Code{}, ErrInvalid
		}
		n++
		sum += n * int(v)
		acc = acc<<5 | uint64(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			raw[(n*5-bits)/8-1] = byte(acc >> bits)
		}
	}
	// the check character, then nothing but separators
	check := -1
	for ; i < len(s); i++ {
		v := values[s[i]]
		switch {
		case v == -2:
		case v < 0 || check >= 0:
			return Code{}, ErrInvalid
		default:
			check = int(v)
		}
	}
	if n != chars || check != sum%31 {
		return Code{}, ErrInvalid
	}
	var sig [macLen]byte
	if !k.sign(&raw, &sig) || !hmac.Equal(sig[:], raw[fieldLen:]) {
		return Code{}, ErrInvalid
	}
	hi := binary.BigEndian.Uint64(raw[1:9])
	c := Code{Key: raw[0], Batch: uint32(hi >> 42), Serial: uint32(hi>>20) & MaxSerial}
	if c.Batch == 0 {
		return Code{}, ErrInvalid
	}
	if mins := (hi&(1<<20-1))<<8 | uint64(raw[9]); mins != maxMins {
		c.Expires = minutes(mins)
		if !now.Before(c.Expires) {
			return c, ErrExpired
		}
	}
	return c, nil
}

// Batch is a batch of codes: Count codes, serials 0 to Count-1, signed with
// key Key, each worth ValueCents, usable until Expires (zero: no expiry).
// Its codes follow from these fields and the secret alone (Codes): the
// server and tools/codes make the same ones.
type Batch struct {
	Name       string
	Number     uint32 // 1..MaxBatch, unique among batches
	Key        uint8
	Count      int
	ValueCents int64
	Expires    time.Time
}

// BatchColumns are the columns a store keeps a batch in, in the order
// ScanBatch reads them (expires_at: Unix seconds, NULL for no expiry).
const BatchColumns = "number, name, key_id, count, value_cents, expires_at"

// ScanBatch reads a batch from a database row of BatchColumns.
func ScanBatch(row interface{ Scan(...any) error }) (Batch, error) {
	var b Batch
	var expires *int64 // NULL: no expiry
	if err := row.Scan(&b.Number, &b.Name, &b.Key, &b.Count, &b.ValueCents, &expires); err != nil {
		return b, err
	}
	if expires != nil {
		b.Expires = time.Unix(*expires, 0).UTC()
	}
	return b, nil
}

// MaxCount bounds the codes of one batch made at once.
const MaxCount = 100_000

// Codes makes the batch's codes, in serial order.
func (k *Keyring) Codes(b Batch) ([]string, error) {
	if b.Count < 1 || b.Count > MaxCount {
		return nil, errors.New("codes: a batch has 1 to 100,000 codes")
	}
	out := make([]string, b.Count)
	buf := make([]byte, 0, Len)
	for i := range out {
		var err error
		if buf, err = k.Make(buf[:0], Code{Key: b.Key, Batch: b.Number, Serial: uint32(i), Expires: b.Expires}); err != nil {
			return nil, err
		}
		out[i] = string(buf)
	}
	return out, nil
}
