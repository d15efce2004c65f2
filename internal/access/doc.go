// Package access is berth's one access gate: it decides, for every path that
// can hand out bytes — the /v2/ API, the peer API on both listeners, admin
// prefetch (which goes through the /v2/ handler) — whether a request may be
// served, and with which upstream client (DESIGN.md "Private content").
//
// It exists so that no path can forget a rule. The policy used to be spread
// over the registry handler's methods, deciding as a mutable request struct
// went along; the owner's side of a peer request once served private content
// with the node credential because its path skipped a step (issue 16 item 1).
// Here the questions are asked in one place, in the shape of distribution's
// AccessController: Authorize takes an immutable Request and returns a
// Decision — a Grant (the client to fetch with, the private mark to store
// content with, the pull token for a cluster owner) or a Challenge (berth's
// own 401, Basic realm="berth") — or an *Error the caller maps to its API.
//
// Two steps of a request happen after the decision and come back here:
// Recheck, once content is open from the store (a private fill may have
// committed it since Authorize), and Refused, the one retry hook, when the
// upstream refuses what a Grant allowed (the repository turned out private,
// or the client's access was revoked): it returns the next Decision.
//
// Credentials never leave memory: caches hold keyed hashes of them, and the
// per-credential upstream clients are bounded. Every table keyed by what
// clients send states its bound where it is declared.
package access
