// Package envflag lets the environment set a command's flags: every flag
// not given on the command line takes the value of its environment
// variable, PREFIX_NAME (upper case, '-' as '_'), when one is set. The
// command line wins. (VictoriaMetrics' lib/envflag does the same.) It never
// overrides a flag given on the command line.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name is the environment variable of the flag name under prefix.
func Name(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets, from the environment, every flag of fs that was not set on
// the command line. Call it after fs.Parse. A bad value is an error naming
// the variable.
func Apply(fs *flag.FlagSet, prefix string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := Name(prefix, f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
