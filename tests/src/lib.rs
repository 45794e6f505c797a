//! Test support (nats-server harness, GStreamer helpers) and end-to-end tests.
