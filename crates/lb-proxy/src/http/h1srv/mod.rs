//! The proxy's own HTTP/1.1 server side, for [`Server`](super::Server)'s
//! common case: plain HTTP/1 requests, served one after the other in the
//! connection's own task (no task or channel per request), on the heads
//! [the edge](super::edge) has already checked.
//!
//! - [`head`]: a checked request head made into an `http::Request`, the
//!   head's bytes shared by the target and field values.
//! - [`body`]: [`ClientBody`], the request body read from the connection by
//!   whichever task polls it, with back-pressure; and the hand-off of a
//!   connection to hyper.
//! - [`write`]: the response head, framed as hyper frames it.
//! - [`conn`]: the loop: head, service, response, the request body's rest.
//!
//! What it does not serve goes to hyper for the rest of the connection, at
//! a request boundary (nothing owed to the client): HTTP/2 (the edge tells
//! it from the preface), protocol switches (`Upgrade`) and
//! `Expect: 100-continue`. (`CONNECT` the edge refuses.)

mod body;
mod conn;
mod head;
mod write;

pub use body::ClientBody;
pub(crate) use body::{HandOff, Shared};
pub(crate) use conn::{serve, shutdown, Answer, End};
