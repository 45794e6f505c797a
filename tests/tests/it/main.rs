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

/// The overload test measures the machine (how fast a worker drains a burst, how much memory
/// it grows by), so it runs alone; every other test of this binary shares the machine with
/// the others (on 2 cores, an OCR test beside it made the server drop frames as a slow
/// consumer). A counter rather than a `RwLock`: the guards are held across awaits.
static SHARING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static ALONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) struct Machine(bool);

impl Drop for Machine {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.0 {
            ALONE.store(false, SeqCst);
        } else {
            SHARING.fetch_sub(1, SeqCst);
        }
    }
}

fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

pub(crate) fn shared_machine() -> Machine {
    use std::sync::atomic::Ordering::SeqCst;
    loop {
        while ALONE.load(SeqCst) {
            pause();
        }
        SHARING.fetch_add(1, SeqCst);
        if !ALONE.load(SeqCst) {
            return Machine(false);
        }
        SHARING.fetch_sub(1, SeqCst);
    }
}

pub(crate) fn whole_machine() -> Machine {
    use std::sync::atomic::Ordering::SeqCst;
    while ALONE.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
        pause();
    }
    while SHARING.load(SeqCst) > 0 {
        pause();
    }
    Machine(true)
}
