//! NATS header names carried on frame messages (contract v1). Everything in a header is also in
//! the payload; headers let routers and tracers read it without decoding Arrow.

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const CAMERA: &str = "Panoptes-Camera";
pub const SEQ: &str = "Panoptes-Seq";
pub const CAPTURE_TS_NS: &str = "Panoptes-Capture-Ts-Ns";
pub const SCHEMA: &str = "Panoptes-Schema";
