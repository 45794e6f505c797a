//! The integration tests of `tests`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod corrupt_frames;
mod ctc_rec;
mod fanout;
mod gst_reference;
mod nats_server;
mod ocr;
mod operators;
mod otlp_receiver;
mod overload;
mod quickstart;
mod tidy;
mod tracking;
mod yolox;
