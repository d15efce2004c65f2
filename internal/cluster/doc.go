// Package cluster lets berth nodes share one download of each blob. Nodes
// find each other with memberlist (SWIM gossip, encrypted and labelled with
// the cluster name so that two clusters never merge); rendezvous hashing of
// a digest over the live members names the nodes that own it; and a
// fetch.Source asks the owners before the upstream, so that however many
// nodes miss a blob at the same moment, the upstream serves it once, to its
// first owner, which streams it on to the others while it fills.
//
// Peer HTTP requests carry a short-lived HMAC token derived from the
// cluster secret (see peer.Keys.Sign): the peer API is reachable from the node
// network, and an unauthenticated request must cost the owner nothing.
package cluster
