// Package deploy_test checks the deployment files as the tools that use
// them would: the Kubernetes manifests decoded strictly into the official
// API types (an unknown or misspelt field fails) and held to the rules of
// running flashsale (probes, a preStop wait and a grace period longer than
// the shutdown delay and the drain, resources, a disruption budget,
// anti-affinity, scrape annotations, secrets not in plain configuration);
// the systemd unit through systemd-analyze verify; the image's static
// binary built the way the Dockerfile builds it.
package deploy_test

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func TestKubernetesManifests(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/flashsale.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var config corev1.ConfigMap
	var deployments []appsv1.Deployment
	var pdbs []policyv1.PodDisruptionBudget
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		strict := func(v any) {
			t.Helper()
			if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
				t.Fatalf("%s: %v", head.Kind, err)
			}
		}
		switch head.Kind {
		case "ConfigMap":
			strict(&config)
		case "Deployment":
			var d appsv1.Deployment
			strict(&d)
			deployments = append(deployments, d)
		case "PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			strict(&p)
			pdbs = append(pdbs, p)
		case "Service":
			strict(&corev1.Service{})
		default:
			t.Fatalf("a document of kind %q the test does not know", head.Kind)
		}
	}
	if len(deployments) != 2 || len(pdbs) != 2 {
		t.Fatalf("%d deployments and %d disruption budgets, want the edges' and the writers'", len(deployments), len(pdbs))
	}
	for k, v := range config.Data {
		if strings.Contains(strings.ToLower(k), "token") || strings.Contains(strings.ToLower(k), "secret") && !strings.HasSuffix(k, "_FILE") {
			t.Fatalf("%s=%s in the ConfigMap: secrets go in the Secret", k, v)
		}
	}
	delay, err1 := time.ParseDuration(config.Data["FLASHSALE_SHUTDOWN_DELAY"])
	drain, err2 := time.ParseDuration(config.Data["FLASHSALE_DRAIN_TIMEOUT"])
	if err1 != nil || err2 != nil {
		t.Fatalf("the ConfigMap must set the shutdown delay and drain timeout: %v %v", err1, err2)
	}
	for _, d := range deployments {
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		edge := d.Spec.Template.Labels["app.kubernetes.io/component"] == "edge"
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
			c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Fatalf("%s: readiness on /readyz and liveness on /healthz", d.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Fatalf("%s: requests and limits", d.Name)
		}
		grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		if grace <= delay+drain+5*time.Second {
			t.Fatalf("%s: a grace period of %v does not cover the preStop wait, the delay (%v) and the drain (%v)", d.Name, grace, delay, drain)
		}
		if d.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || d.Spec.Template.Annotations["prometheus.io/port"] != "6060" {
			t.Fatalf("%s: scrape annotations", d.Name)
		}
		token := false
		for _, e := range c.Env {
			token = token || e.Name == "FLASHSALE_ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}
		if !token {
			t.Fatalf("%s: the admin listener is off loopback: FLASHSALE_ADMIN_TOKEN from the Secret", d.Name)
		}
		if !edge {
			continue
		}
		if *d.Spec.Replicas < 3 || spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
			t.Fatalf("%s: three replicas spread over machines", d.Name)
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil ||
			time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second < delay {
			t.Fatalf("%s: a preStop wait of at least -shutdown-delay (%v)", d.Name, delay)
		}
	}
}

// The unit passes systemd-analyze verify (with ExecStart pointed at a
// built binary: the test cannot install one in /usr/local/bin).
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "flashsale")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/flashsale/flashsale").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("systemd/flashsale.service")
	if err != nil {
		t.Fatal(err)
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/flashsale"), []byte(bin))
	path := filepath.Join(dir, "flashsale.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The image's binary is built as the Dockerfile builds it (CGO_ENABLED=0)
// and is static: no program interpreter, so it runs on a base with no libc.
func TestStaticBinary(t *testing.T) {
	df, err := os.ReadFile("Dockerfile")
	if err != nil || !bytes.Contains(df, []byte("CGO_ENABLED=0 go build")) {
		t.Fatalf("the Dockerfile must build with CGO_ENABLED=0: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "flashsale")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/flashsale/flashsale")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a program interpreter: not static")
		}
	}
}
