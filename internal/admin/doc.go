// Package admin is berth's control plane: a JSON-RPC 2.0 server on a Unix
// socket (see DESIGN.md, "Admin control plane"), the methods it serves, and
// the [Client] that `berth ctl` uses.
//
// # Framing
//
// A connection carries a stream of requests, objects or batch arrays, with
// any whitespace between them. Bytes are read into a [bufchain.Chain] taken
// from a pool shared by every connection, so a request of any size up to
// admin.max_message_bytes is read whole and nothing larger is ever held. As
// bytes arrive a scanner walks them once, tracking string, escape and bracket
// depth, to find where the value ends; only then is the message decoded, once.
// Each response is one line.
//
// What one message can make the server hold is bounded three ways: the
// message by admin.max_message_bytes, a batch by [MaxBatch] requests (counted
// without keeping the excess), and a response line by [MaxResponseBytes] (a
// result that would pass it becomes an error for its request).
//
// Errors follow the JSON-RPC 2.0 specification: -32700 for malformed JSON
// (the connection then closes: the stream cannot be resynchronised), -32600
// for an invalid request or one over the size cap (the latter also closes the
// connection), -32601 for an unknown method, -32602 for bad params, -32603
// for an internal failure, and -32000 and below for a method that failed.
// Methods return errors; [toError] alone turns them into JSON-RPC errors.
package admin
