//! A real RTSP server on loopback (gst-rtsp-server through the gstreamer-rtsp-server crate), for
//! tests of camera ingest: it serves one mount, can be stopped (clients disconnected, port
//! closed) and started again on the same port, as a camera that reboots does.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// The launch line of a live H.264 test camera: `videotestsrc` with `text` drawn on it,
/// encoded for low latency with a key frame every second, as the `pay0` payloader
/// gst-rtsp-server expects.
pub fn h264_camera(width: u32, height: u32, fps: u32, text: &str) -> String {
    let text = text.replace(['"', '\\'], "");
    format!(
        "( videotestsrc is-live=true pattern=smpte ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
         ! textoverlay text=\"{text}\" font-desc=\"Sans Bold 24\" \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
         ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
}

/// A running RTSP server on `127.0.0.1`; stops when dropped.
pub struct RtspServer {
    port: u16,
    path: String,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
}

impl RtspServer {
    /// Serves `launch` (see [`h264_camera`]) at `rtsp://127.0.0.1:<free port><path>`.
    pub fn start(path: &str, launch: &str) -> anyhow::Result<Self> {
        Self::start_on(0, path, launch)
    }

    /// Like [`Self::start`] on a given port (0: any free one), e.g. to come back where a
    /// stopped server was.
    pub fn start_on(port: u16, path: &str, launch: &str) -> anyhow::Result<Self> {
        gst::init()?;
        let (tx, rx) = mpsc::channel::<anyhow::Result<(u16, glib::MainLoop)>>();
        let (path_owned, launch) = (path.to_owned(), launch.to_owned());
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || serve(port, &path_owned, &launch, &tx))?;
        let (port, main_loop) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("the RTSP server did not start: {e}"))??;
        Ok(Self {
            port,
            path: path.to_owned(),
            main_loop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.path)
    }

    /// Disconnects every client and closes the listening socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The server's thread: its own main context, so it runs beside anything else using GLib.
fn serve(
    port: u16,
    path: &str,
    launch: &str,
    started: &mpsc::Sender<anyhow::Result<(u16, glib::MainLoop)>>,
) {
    let context = glib::MainContext::new();
    let result = context.with_thread_default(|| {
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let Some(mounts) = server.mount_points() else {
            return Err(anyhow::anyhow!("the RTSP server has no mount points"));
        };
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(launch);
        // One pipeline for every client, as a camera has.
        factory.set_shared(true);
        mounts.add_factory(path, factory);
        let source = server
            .attach(Some(&context))
            .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let bound = u16::try_from(server.bound_port())
            .map_err(|_| anyhow::anyhow!("the RTSP server is not bound"))?;
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let _ = started.send(Ok((bound, main_loop.clone())));
        main_loop.run();
        // Stopped: drop the connections and the listening socket, as a camera that goes away.
        server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        // The source lives on this context, not the global default `SourceId::remove` uses.
        if let Some(source) = context.find_source_by_id(&source) {
            source.destroy();
        }
        // Let the closed connections' sources finish on this context.
        while context.iteration(false) {}
        Ok(())
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = started.send(Err(e));
        }
        Err(e) => {
            let _ = started.send(Err(anyhow::anyhow!(
                "cannot make the RTSP context the thread default: {e}"
            )));
        }
    }
}
