// Package bufchain buffers a message that arrives in pieces, such as a
// JSON-RPC request read from the admin socket, in a chain of fixed-size
// blocks taken from a shared [Pool].
//
// # Why
//
// Apache Traffic Server's JSON-RPC admin server read each request into a
// fixed 32 KiB buffer. A request larger than that (a long list of digests to
// purge, say) did not fail loudly: it was cut short, failed to parse, and the
// operator saw a confusing error or none at all. berth reads into a [Chain]
// that grows one block at a time as bytes arrive, so a request of any size up
// to an explicit cap is read whole, and one over the cap is reported as a
// [*TooLargeError] giving both the size seen and the limit.
//
// # Design
//
//   - Blocks are fixed-size (16 KiB by default) and never moved or copied once
//     written: growing the chain appends a block, it does not reallocate and
//     copy what is already there, as a growing []byte would.
//   - Blocks come from a [Pool] that any number of chains, on any number of
//     goroutines, may share. A message that fits in blocks already pooled
//     allocates nothing for its storage.
//   - [Chain.Fill] performs exactly one Read, so a server can interleave
//     reading with parsing: fill, try to parse a complete message from the
//     front, [Chain.Discard] it, repeat. Back-to-back messages on one stream
//     are handled this way, and a chain that becomes empty returns all its
//     blocks, so an idle connection holds no buffer memory.
//   - A [Reader] reads the buffered bytes from the front through all blocks
//     without gathering them into one slice; it is an [io.Reader] and
//     [io.ByteScanner], which is what encoding/json's Decoder wants.
package bufchain
