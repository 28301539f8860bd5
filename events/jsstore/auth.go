package jsstore

import (
	"crypto/rand"
	"encoding/base64"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The identities of the NATS server the service uses when outside programs
// may connect to it: the embedded server listening for clients
// (--nats-listen), or an external cluster configured as in deploy/nats.
const (
	// ServiceUser is the service's own user: every permission.
	ServiceUser = "retailpulse"
	// SubscriberUser is the read-only user of event-stream subscribers
	// (SubscriberPermissions).
	SubscriberUser = "subscriber"
	// ServiceInboxPrefix is the inbox prefix of the service's connections
	// (ServiceOptions). Subscribers may subscribe to _INBOX.> for their own
	// replies; the service's replies (work deliveries, API answers) go
	// elsewhere, where no subscriber may listen.
	ServiceInboxPrefix = "_RP_INBOX"
)

// Auth turns on authorization on an embedded server (ServerConfig.Auth):
// every connection, in-process ones included, must then log in.
type Auth struct {
	// ServicePassword is ServiceUser's password; required.
	ServicePassword string
	// SubscriberPassword, if set, adds SubscriberUser with this password and
	// SubscriberPermissions on Stream.
	SubscriberPassword string
	// Stream is the event log's stream name; default DefaultStream.
	Stream string
}

// DefaultStream is the event log's stream name unless Config.Stream says
// otherwise.
const DefaultStream = "RETAILPULSE"

func (a *Auth) users() []*server.User {
	users := []*server.User{{Username: ServiceUser, Password: a.ServicePassword}}
	if a.SubscriberPassword != "" {
		stream := a.Stream
		if stream == "" {
			stream = DefaultStream
		}
		users = append(users, &server.User{Username: SubscriberUser, Password: a.SubscriberPassword, Permissions: SubscriberPermissions(stream)})
	}
	return users
}

// SubscriberPermissions are the least privileges of a program that follows
// the event log: it may subscribe to the log's subjects (rp.>) and to its
// own inboxes; read the stream's info and its messages by sequence;
// create, read from, acknowledge on and delete its own consumers on the
// stream. It may not publish to the log's subjects, delete, purge or
// change the stream or its messages, create other streams, list the
// stream's consumers (the list would name the work consumer and every
// other subscriber's), or create, read, acknowledge on, change or delete
// the work consumer (WorkConsumer), under any of the API's subject forms. deploy/nats/nats-server.conf
// grants the same to its subscriber user.
func SubscriberPermissions(stream string) *server.Permissions {
	s, w := stream, WorkConsumer
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + s,
				"$JS.API.STREAM.MSG.GET." + s,
				// Named consumers only (the bare CREATE.<stream> form takes
				// the name from the body, where a permission cannot see it).
				"$JS.API.CONSUMER.CREATE." + s + ".*",
				"$JS.API.CONSUMER.CREATE." + s + ".*.>",
				"$JS.API.CONSUMER.DURABLE.CREATE." + s + ".*",
				"$JS.API.CONSUMER.INFO." + s + ".*",
				"$JS.API.CONSUMER.DELETE." + s + ".*",
				"$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
				// Acknowledgements and flow control replies, in both the
				// old and the domain-qualified subject forms.
				"$JS.ACK." + s + ".>",
				"$JS.ACK.*.*." + s + ".>",
				"$JS.FC." + s + ".>",
				"$JS.FC.*.*." + s + ".>",
			},
			Deny: []string{
				"$JS.API.CONSUMER.*." + s + "." + w,
				"$JS.API.CONSUMER.*." + s + "." + w + ".>",
				"$JS.API.CONSUMER.DURABLE.CREATE." + s + "." + w,
				"$JS.API.CONSUMER.MSG.NEXT." + s + "." + w,
				"$JS.ACK." + s + "." + w + ".>",
				"$JS.ACK.*.*." + s + "." + w + ".>",
				"$JS.FC." + s + "." + w + ".>",
				"$JS.FC.*.*." + s + "." + w + ".>",
			},
		},
		Subscribe: &server.SubjectPermission{
			Allow: []string{"rp.>", "_INBOX.>"},
		},
	}
}

// ServiceOptions are the options of the service's own connections to a
// server with Auth: its user and password (none when password is empty)
// and its private inbox prefix.
func ServiceOptions(password string) []nats.Option {
	opts := []nats.Option{nats.CustomInboxPrefix(ServiceInboxPrefix)}
	if password != "" {
		opts = append(opts, nats.UserInfo(ServiceUser, password))
	}
	return opts
}

// NewPassword returns a random password (192 bits, URL-safe base64).
func NewPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// UserTraffic reads one user's connections on a server and the messages
// the server sent them, for metrics. Sent never decreases: messages sent
// to connections that have closed since the last Read are still counted
// (from the server's list of recently closed connections). Safe for
// concurrent use.
type UserTraffic struct {
	s    *server.Server
	user string

	mu    sync.Mutex
	seen  map[uint64]int64 // messages sent per connection at the last Read
	total uint64
}

// NewUserTraffic returns a UserTraffic for user on s.
func NewUserTraffic(s *server.Server, user string) *UserTraffic {
	return &UserTraffic{s: s, user: user, seen: map[uint64]int64{}}
}

// Read returns the user's open connections and the messages sent to its
// connections so far (since NewUserTraffic, as far as the server's lists
// reach back).
func (u *UserTraffic) Read() (open int, sent uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	cz, err := u.s.Connz(&server.ConnzOptions{State: server.ConnAll, Username: true, User: u.user, Limit: 1 << 20})
	if err != nil {
		return 0, u.total
	}
	now := make(map[uint64]int64, len(cz.Conns))
	for _, c := range cz.Conns {
		if c.Stop == nil {
			open++
		}
		if d := c.OutMsgs - u.seen[c.Cid]; d > 0 {
			u.total += uint64(d)
		}
		now[c.Cid] = max(c.OutMsgs, u.seen[c.Cid])
	}
	u.seen = now
	return open, u.total
}
