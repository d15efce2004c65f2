package peer

// Member is a node as the asking side needs to know it: whom to blame and
// skip, and where to send the request.
type Member struct {
	// Name is the node's unique, stable name (QueryFrom, failure memory,
	// the bytes it served).
	Name string
	// URL is where its peer API is reached ("": it advertises none and is
	// never asked).
	URL string
}

// Membership is what the asking side needs of the cluster (the cluster
// package implements it over gossip; tests give a fixed order).
type Membership interface {
	// Name is this node's name; it is never asked for content.
	Name() string
	// Owners orders the alive members, this node included, by ownership of
	// key (rendezvous hashing): every node must compute the same order.
	// It is called for each request and must not block.
	Owners(key string) []Member
}
