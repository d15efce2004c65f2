package upstream

import (
	"fmt"
	"net/netip"
)

// AddrClass is the kind of network an address belongs to. Where berth may
// connect on an upstream's behalf depends on the class of the upstream and of
// the address it points at (see allowDial).
type AddrClass uint8

// The classes, from the most to the least exposed.
const (
	// Public is any address not in one of the ranges below.
	Public AddrClass = iota
	// Private is RFC 1918, unique-local IPv6 (fc00::/7) and shared
	// address space (100.64.0.0/10): a cluster's or a company's network.
	Private
	// Loopback is 127.0.0.0/8, ::1 and the unspecified address (which the
	// kernel connects to this host).
	Loopback
	// LinkLocal is 169.254.0.0/16 and fe80::/10, where cloud metadata
	// services answer with credentials.
	LinkLocal
)

func (c AddrClass) String() string {
	switch c {
	case Public:
		return "public"
	case Private:
		return "private"
	case Loopback:
		return "loopback"
	case LinkLocal:
		return "link-local"
	}
	return fmt.Sprintf("AddrClass(%d)", uint8(c))
}

var (
	sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")
	// nat64 is RFC 6052's well-known prefix: a gateway there forwards to the
	// IPv4 address in the last 32 bits, so that address is the one to judge.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
)

// ClassifyAddr returns the class of a. It is the default Options.Classify.
func ClassifyAddr(a netip.Addr) AddrClass {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case a.IsLoopback(), a.IsUnspecified():
		return Loopback
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return LinkLocal
	case a.IsPrivate(), sharedAddressSpace.Contains(a):
		return Private
	}
	return Public
}

// allowDial decides whether a connection to an address of class target may
// be made on behalf of an upstream of class up, for anything other than the
// configured upstream host itself: token realms, blob stores, any redirect.
//
//   - link-local never: cloud metadata answers there with credentials;
//   - loopback only from a loopback upstream: another machine has no business
//     pointing berth at its own node;
//   - private only from a private or loopback upstream: a registry inside a
//     network may keep its blobs there, one outside it may not reach in.
func allowDial(up, target AddrClass) error {
	ok := false
	switch target {
	case Public:
		ok = true
	case Private:
		ok = up == Private || up == Loopback
	case Loopback:
		ok = up == Loopback
	}
	if ok {
		return nil
	}
	return fmt.Errorf("%w: a %s address, from a %s upstream", ErrRefused, target, up)
}
