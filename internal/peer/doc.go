// Package peer is berth's peer protocol: how a node asks the owner of a digest
// for content, and how the owner answers. The wire words (path, query
// parameters, headers, heartbeat), the token scheme that authenticates a
// request and its verification (an HMAC over every part that changes the
// answer's meaning, a nonce seen-set against replays) live here, next to both
// ends that speak them, so that they cannot drift apart.
//
// Membership and the rendezvous order of owners are the cluster package's;
// the OCI API, routing and the access gate are the registry's and access's.
// Tokens are derived from the cluster secret (Keys): the peer API is
// reachable from the node network, and an unauthenticated request must cost
// the owner nothing.
package peer
