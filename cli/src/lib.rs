//! The panoptes command: run topologies, subscribe to detections.
