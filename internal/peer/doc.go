// Package peer is berth's peer protocol: how a node asks the owner of a digest
// for content, and how the owner answers. Both ends live here with what they
// must agree on, so that they cannot drift apart in a rolling update:
//
//   - the wire words (wire.go: path, query parameters, headers, heartbeat);
//   - the token scheme (Keys): an HMAC over every part that changes the
//     answer's meaning, and a nonce seen-set against replays. The peer API is
//     reachable from the node network, and an unauthenticated request must
//     cost the owner nothing;
//   - the client (Fetcher): a fetch.Source that asks a digest's owners, then
//     members that may hold it, before the upstream, resuming with Range and
//     remembering which peer failed (client.go, response.go);
//   - the server (Server): token first, then the request's parameters, 102
//     heartbeats while the answer is not ready, one error mapping. What it
//     serves comes from a Backend: the registry handler, with the routing,
//     access gate, store and fills of its /v2/ API.
//
// Membership and the rendezvous order of owners are the cluster package's
// (Membership); the OCI API, routing and the access gate are the registry's
// and access's.
package peer
