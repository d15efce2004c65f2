// Package cluster lets berth nodes share one download of each blob. Nodes
// find each other with memberlist (SWIM gossip, encrypted and labelled with
// the cluster name so that two clusters never merge); rendezvous hashing of
// a digest over the live members names the nodes that own it (Cluster is
// the peer client's peer.Membership); and the peer package's client asks
// the owners before the upstream, so that however many nodes miss a blob at
// the same moment, the upstream serves it once, to its first owner, which
// streams it on to the others while it fills.
//
// Gossip is encrypted with keys derived from the cluster secret
// (peer.Keys), which also sign every peer HTTP request.
package cluster
