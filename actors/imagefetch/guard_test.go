package imagefetch

import (
	"errors"
	"net/netip"
	"testing"
)

func TestIsBlocked(t *testing.T) {
	tests := []struct {
		addr    string
		blocked bool
	}{
		// Loopback.
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"::1", true},
		// RFC 1918.
		{"10.0.0.1", true},
		{"10.255.255.255", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		// Link-local, including cloud metadata.
		{"169.254.169.254", true},
		{"169.254.0.1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"febf:ffff::1", true},
		// CGNAT.
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		// Unique-local.
		{"fc00::1", true},
		{"fd12:3456:789a::1", true},
		// Unspecified and "this network".
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"::", true},
		// Multicast and broadcast.
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"ff02::1", true},
		{"ff0e::1", true},
		{"255.255.255.255", true},
		// Other reserved, documentation and benchmarking ranges.
		{"240.0.0.1", true},
		{"192.0.0.170", true},
		{"192.0.2.1", true},
		{"198.18.0.1", true},
		{"198.51.100.7", true},
		{"203.0.113.9", true},
		{"2001:db8::1", true},
		{"100::1", true},
		{"fec0::1", true},
		{"64:ff9b:1::1", true},
		// IPv4-mapped IPv6 forms of blocked IPv4.
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:192.168.0.1", true},
		{"::ffff:0.0.0.0", true},
		{"::ffff:255.255.255.255", true},
		// Deprecated IPv4-compatible form.
		{"::127.0.0.1", true},
		{"::8.8.8.8", true},
		// NAT64 and 6to4 embedding a blocked IPv4.
		{"64:ff9b::127.0.0.1", true},
		{"64:ff9b::a9fe:a9fe", true},
		{"2002:7f00:1::", true},
		{"2002:a9fe:a9fe::1", true},
		{"2002:c0a8:0101::1", true},

		// Public.
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"93.184.216.34", false},
		{"2606:4700::1111", false},
		{"2a00:1450:4001:81c::200e", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"172.15.255.255", false},
		{"172.32.0.0", false},
		{"169.253.255.255", false},
		{"223.255.255.255", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false},
		{"2002:0808:0808::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			equal(t, "IsBlocked", IsBlocked(netip.MustParseAddr(tt.addr)), tt.blocked)
		})
	}
	t.Run("zero Addr", func(t *testing.T) {
		equal(t, "IsBlocked", IsBlocked(netip.Addr{}), true)
	})
}

func TestDialControl(t *testing.T) {
	control := dialControl(permitPublic)
	tests := []struct {
		network, address string
		allowed          bool
	}{
		{"tcp4", "8.8.8.8:443", true},
		{"tcp6", "[2606:4700::1111]:80", true},
		{"tcp", "93.184.216.34:80", true},
		{"tcp4", "127.0.0.1:80", false},
		{"tcp6", "[::1]:80", false},
		{"tcp6", "[::ffff:127.0.0.1]:80", false},
		{"tcp6", "[fe80::1%eth0]:80", false},
		{"tcp4", "169.254.169.254:80", false},
		{"udp4", "8.8.8.8:53", false},
		{"tcp4", "not-an-address:80", false},
		{"tcp4", "8.8.8.8", false},
	}
	for _, tt := range tests {
		err := control(tt.network, tt.address, nil)
		if tt.allowed && err != nil {
			t.Errorf("%s %s refused: %v", tt.network, tt.address, err)
		}
		if !tt.allowed && !errors.Is(err, errBlockedDial) {
			t.Errorf("%s %s: err = %v, want refused", tt.network, tt.address, err)
		}
	}
}

// FuzzIsBlocked checks the guard's invariants over arbitrary addresses: an
// IPv4 address and its IPv4-mapped and NAT64 forms are judged alike, every
// address in a class netip knows to be non-public is blocked, and the dial
// hook refuses exactly what IsBlocked blocks.
func FuzzIsBlocked(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "169.254.169.254", "8.8.8.8", "::1", "fe80::1", "::ffff:7f00:1", "2606:4700::1111", "2002:7f00:1::"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	control := dialControl(permitPublic)
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		blocked := IsBlocked(ip)

		if ip.Is4() {
			b4 := ip.As4()
			mapped := netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b4[0], 13: b4[1], 14: b4[2], 15: b4[3]})
			nat64 := netip.AddrFrom16([16]byte{0: 0x00, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b4[0], 13: b4[1], 14: b4[2], 15: b4[3]})
			sixToFour := netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: b4[0], 3: b4[1], 4: b4[2], 5: b4[3]})
			for _, alias := range []netip.Addr{mapped, nat64, sixToFour} {
				if IsBlocked(alias) != blocked {
					t.Fatalf("IsBlocked(%v) = %v but IsBlocked(%v) = %v", ip, blocked, alias, !blocked)
				}
			}
		}
		if ip.Is4In6() && IsBlocked(ip.Unmap()) != blocked {
			t.Fatalf("IsBlocked(%v) = %v, differs from its IPv4 form", ip, blocked)
		}

		u := ip.Unmap()
		nonPublic := u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsMulticast() ||
			u.IsUnspecified() || u.IsLinkLocalMulticast() || u.IsInterfaceLocalMulticast()
		if nonPublic && !blocked {
			t.Fatalf("IsBlocked(%v) = false for a non-public address", ip)
		}

		err := control("tcp", netip.AddrPortFrom(ip, 443).String(), nil)
		if blocked != (err != nil) {
			t.Fatalf("IsBlocked(%v) = %v but the dial hook says %v", ip, blocked, err)
		}
	})
}
