package jsstore_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/retailpulse/retailpulse/events/jsstore"
)

// TestDeployNATSConfig_GrantsTheEmbeddedServersPermissions parses the NATS
// configurations shipped in deploy/ (compose and Kubernetes) and requires
// their users to be the embedded server's: the service with every
// permission, and the subscriber with exactly SubscriberPermissions.
func TestDeployNATSConfig_GrantsTheEmbeddedServersPermissions(t *testing.T) {
	t.Setenv("SERVER_NAME", "n1")
	t.Setenv("RETAILPULSE_NATS_PASSWORD", "service-pw")
	t.Setenv("RETAILPULSE_SUBSCRIBER_PASSWORD", "subscriber-pw")
	root := filepath.Join("..", "..", "deploy")

	// The Kubernetes ConfigMap embeds the file under "nats-server.conf: |".
	cm, err := os.ReadFile(filepath.Join(root, "k8s", "nats-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(cm), "nats-server.conf: |\n")
	if !ok {
		t.Fatal("nats-config.yaml: no nats-server.conf block")
	}
	var conf []string
	for _, l := range strings.Split(block, "\n") {
		if l != "" && !strings.HasPrefix(l, "    ") {
			break
		}
		conf = append(conf, strings.TrimPrefix(l, "    "))
	}
	k8sConf := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(k8sConf, []byte(strings.Join(conf, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ name, path string }{
		{"deploy/nats/nats-server.conf", filepath.Join(root, "nats", "nats-server.conf")},
		{"deploy/k8s/nats-config.yaml", k8sConf},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts, err := server.ProcessConfigFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			users := map[string]*server.User{}
			for _, u := range opts.Users {
				users[u.Username] = u
			}
			if len(users) != 2 {
				t.Fatalf("users %v, want %s and %s", users, jsstore.ServiceUser, jsstore.SubscriberUser)
			}
			svc, sub := users[jsstore.ServiceUser], users[jsstore.SubscriberUser]
			if svc == nil || svc.Password != "service-pw" || svc.Permissions != nil {
				t.Fatalf("service user %+v: want the password from RETAILPULSE_NATS_PASSWORD and every permission", svc)
			}
			if sub == nil || sub.Password != "subscriber-pw" || sub.Permissions == nil {
				t.Fatalf("subscriber user %+v", sub)
			}
			want := jsstore.SubscriberPermissions(jsstore.DefaultStream)
			got := sub.Permissions
			for _, c := range []struct {
				what       string
				got, want_ []string
			}{
				{"publish allow", got.Publish.Allow, want.Publish.Allow},
				{"publish deny", got.Publish.Deny, want.Publish.Deny},
				{"subscribe allow", got.Subscribe.Allow, want.Subscribe.Allow},
			} {
				g, w := slices.Sorted(slices.Values(c.got)), slices.Sorted(slices.Values(c.want_))
				if !reflect.DeepEqual(g, w) {
					t.Errorf("%s:\n got  %q\n want %q", c.what, g, w)
				}
			}
			if got.Subscribe.Deny != nil || got.Response != nil {
				t.Errorf("subscribe deny %v, responses %v: want none", got.Subscribe.Deny, got.Response)
			}
		})
	}
}
