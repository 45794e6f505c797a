//! The integration tests of `panoptes-view`, one test binary: the model fed message by
//! message (bounds, matching by seq, bad input), and the server over a real nats-server
//! (tokens, what it refuses to serve).

mod model;
mod server;
