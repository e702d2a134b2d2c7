package envflag

import (
	"flag"
	"testing"
)

func TestApply(t *testing.T) {
	f := func(args []string, env map[string]string, want string, wantErr bool) {
		t.Helper()
		t.Run("", func(t *testing.T) { // the environment is the subtest's
			for k, v := range env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			dir := fs.String("data-dir", "./data", "")
			fs.Int("node-id", 0, "")
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			if err := Apply(fs, "FLASHSALE"); (err != nil) != wantErr {
				t.Fatalf("%v %v: err %v", args, env, err)
			}
			if *dir != want {
				t.Fatalf("%v %v: -data-dir %q, want %q", args, env, *dir, want)
			}
		})
	}
	f(nil, nil, "./data", false)
	f(nil, map[string]string{"FLASHSALE_DATA_DIR": "/srv"}, "/srv", false)
	f([]string{"-data-dir", "/cli"}, map[string]string{"FLASHSALE_DATA_DIR": "/srv"}, "/cli", false) // the command line wins
	f(nil, map[string]string{"FLASHSALE_NODE_ID": "many"}, "./data", true)
}
