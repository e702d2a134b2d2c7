// Command codes makes a batch's redemption codes offline, for printing:
// the same codes the server answered when the batch was created (POST
// /api/v1/codes/batches), from the same secret. A batch's codes follow from
// its number, key id, count and expiry, which that answer carries.
//
//	go run ./tools/codes -secret-file 1:/etc/flashsale/codes-1.key \
//	    -number 7 -key 1 -count 1000 -expires-at 2027-01-31T23:59:00Z > batch-7.txt
//
// It prints one code per line, serial 0 first. Nothing is registered: a code
// is redeemable only for a batch the server created.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/flashsale/flashsale/codes"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("codes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secrets := fs.String("secret-file", "", "the server's -codes-secret-file: <key id>:<path>, comma separated")
	number := fs.Uint("number", 0, "the batch's number (the creation's answer: \"number\")")
	key := fs.Int("key", -1, "the key id the batch is signed with (the answer's \"key\"); default the newest of -secret-file")
	count := fs.Int("count", 0, "codes in the batch")
	expires := fs.String("expires-at", "", "the batch's expiry, RFC 3339 (kept to the minute), as the batch was made")
	noExpiry := fs.Bool("no-expiry", false, "the batch has no expiry (instead of -expires-at)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "codes: "+format+"\n", a...)
		return 2
	}
	if *secrets == "" || *number == 0 || *count == 0 {
		return fail("-secret-file, -number and -count are required")
	}
	if (*expires == "") == !*noExpiry {
		return fail("give the batch's -expires-at, or -no-expiry: a code with another expiry than its batch's is refused")
	}
	if *number > codes.MaxBatch || *key > 255 {
		return fail("-number is at most %d and -key at most 255", codes.MaxBatch)
	}
	k, err := codes.LoadKeyring(*secrets)
	if err != nil {
		return fail("%v", err)
	}
	b := codes.Batch{Number: uint32(*number), Key: k.Newest(), Count: *count}
	if *key >= 0 {
		b.Key = uint8(*key)
	}
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return fail("-expires-at: %v", err)
		}
		b.Expires = t.UTC().Truncate(time.Minute)
	}
	list, err := k.Codes(b)
	if err != nil {
		return fail("%v", err)
	}
	w := bufio.NewWriter(stdout)
	for _, c := range list {
		fmt.Fprintln(w, c)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "codes: %v\n", err)
		return 1
	}
	return 0
}
