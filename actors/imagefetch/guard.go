package imagefetch

import (
	"errors"
	"net/netip"
	"syscall"
)

// errBlockedDial is what the dial hook returns for a refused destination. It
// travels up through *net.OpError and *url.Error and becomes ClassBlocked.
var errBlockedDial = errors.New("destination address is not allowed")

// blockedPrefixes are the destinations refused unless private networks are
// allowed: everything IANA's special-purpose registries mark as not globally
// reachable that a fetch could plausibly land on. IPv4-mapped, NAT64 and 6to4
// addresses are judged by the IPv4 address they embed (see IsBlocked).
var blockedPrefixes = []netip.Prefix{
	// IPv4.
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network", unspecified
	netip.MustParsePrefix("10.0.0.0/8"),      // RFC 1918 private
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT shared space
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),   // RFC 1918 private
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast
	netip.MustParsePrefix("192.168.0.0/16"),  // RFC 1918 private
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, incl. 255.255.255.255 broadcast

	// IPv6.
	netip.MustParsePrefix("::/96"),          // unspecified, loopback, deprecated IPv4-compatible
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("3fff::/20"),      // documentation
	netip.MustParsePrefix("fc00::/7"),       // unique-local
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour    = netip.MustParsePrefix("2002::/16")
	mappedPrefix = netip.MustParsePrefix("::ffff:0:0/96")
)

// IsBlocked reports whether ip is a destination the fetcher refuses unless
// Config.AllowPrivateNetworks is set: loopback, RFC 1918 private, link-local
// (including the 169.254.169.254 cloud metadata address), CGNAT, unique-local,
// unspecified, multicast, broadcast and other reserved, documentation and
// benchmarking ranges, both IPv4 and IPv6. An IPv4 address embedded in an
// IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::)
// address is judged as itself. The invalid zero Addr is blocked. A zone is
// ignored.
func IsBlocked(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.WithZone("")
	if ip.Is6() {
		switch {
		case mappedPrefix.Contains(ip), nat64Prefix.Contains(ip):
			b := ip.As16()
			return IsBlocked(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(ip):
			b := ip.As16()
			return IsBlocked(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// dialControl is the net.Dialer Control hook: it sees the address actually
// being dialled, after name resolution, so odd spellings of an address and DNS
// rebinding cannot get past it. permit decides; anything unparsable or not TCP
// is refused.
func dialControl(permit func(netip.Addr) bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return errBlockedDial
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !permit(ap.Addr()) {
			return errBlockedDial
		}
		return nil
	}
}

// permitPublic is the default guard.
func permitPublic(ip netip.Addr) bool { return !IsBlocked(ip) }

// permitAll is the guard under Config.AllowPrivateNetworks.
func permitAll(netip.Addr) bool { return true }
