//! Sinks: encode detections and publish them on result subjects.
