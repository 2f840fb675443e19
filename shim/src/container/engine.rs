//! The executor of a wasm guest on the shim's own engine, as a task of the
//! shim: a command run to its exit, or a wasi:http component served until
//! a signal.
use super::executor::{never_ran, Executor};
use super::ExecutorError;
use berth_host::native::Usage;
use berth_host::plan::RunPlan;
use berth_host::wasm::http::HttpService;
use berth_host::wasm::netns::NetNamespace;
use berth_host::wasm::{server, Interrupt, Meter, Prepared, Reason, Runtime};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the guest does.
pub enum Work {
    /// Runs its command (`_start` / `wasi:cli/run`) to an exit.
    Run { plan: Box<RunPlan>, prepared: Arc<Prepared> },
    /// Serves its `wasi:http/incoming-handler` until stopped: SIGTERM (any
    /// signal but SIGKILL) drains requests in flight and exits 0; SIGKILL
    /// ends it at once (137). The service and its listener are taken when
    /// serving starts and dropped when it ends: the service holds the
    /// container's stdout and stderr, which must close at its exit, as a
    /// process's do (containerd 2.x waits for their end before it
    /// deletes the container).
    Serve { serving: Mutex<Option<Box<(HttpService, std::net::TcpListener)>>>, limits: server::Limits, stop: watch::Sender<u32> },
}

pub struct EngineGuest {
    id: String,
    pod: String,
    work: Work,
    interrupt: Interrupt,
    meter: Arc<Meter>,
    /// The runtime of the network namespace the guest joins (its spec's,
    /// e.g. the pod's); `None`: the shim's own.
    netns: Option<Arc<NetNamespace>>,
    /// Our own handle on the stderr FIFO, held until the guest has ended
    /// so that runtime messages (a trap) reach the reader before its EOF.
    stderr: Mutex<Option<std::fs::File>>,
    /// Set when the guest trapped after its memory limit refused it
    /// memory: it ran out of memory, as the kernel's OOM killer reports.
    oom: AtomicBool,
}

impl EngineGuest {
    pub fn new(id: &str, pod: &str, work: Work, meter: Arc<Meter>, netns: Option<Arc<NetNamespace>>, stderr: Option<std::fs::File>) -> Self {
        EngineGuest {
            id: id.to_string(),
            pod: pod.to_string(),
            work,
            interrupt: Interrupt::new(),
            meter,
            netns,
            stderr: Mutex::new(stderr),
            oom: AtomicBool::new(false),
        }
    }

    /// A message on the container's stderr (as a runtime error would be).
    fn tell_stderr(&self, msg: &str) {
        use std::io::Write;
        if let Some(f) = self.stderr.lock().unwrap().as_mut() {
            let _ = f.write_all(msg.as_bytes());
        }
    }

    /// Serves HTTP until a signal; the exit status.
    async fn serve(&self, serving: Option<Box<(HttpService, std::net::TcpListener)>>, limits: server::Limits, stop: &watch::Sender<u32>) -> i32 {
        let Some((service, listener)) = serving.map(|b| *b) else { return 125 };
        let (mut drain, mut hard) = (stop.subscribe(), stop.subscribe());
        let drain = async move {
            let _ = drain.wait_for(|s| *s != 0).await;
        };
        let serve = server::serve(Arc::new(service), listener, limits, drain, None);
        tokio::select! {
            biased;
            _ = hard.wait_for(|s| *s == libc::SIGKILL as u32) => {
                tracing::info!(container_id = %self.id, pod_id = %self.pod, "killed; requests in flight are cut off");
                128 + libc::SIGKILL
            }
            r = std::panic::AssertUnwindSafe(serve).catch_unwind() => match r {
                Ok(Ok(())) => {
                    tracing::info!(container_id = %self.id, pod_id = %self.pod, "stopped serving; requests in flight finished");
                    0
                }
                Ok(Err(e)) => {
                    self.tell_stderr(&format!("berth: {}: serving failed: {}\n", self.id, berth_host::error::chain(&e)));
                    125
                }
                Err(_) => {
                    tracing::error!(container_id = %self.id, pod_id = %self.pod, "the HTTP server's host code panicked; the other containers are unaffected");
                    134
                }
            },
        }
    }

    /// Runs the command to its exit; the exit status.
    async fn run(&self, runtime: Arc<Runtime>, plan: &RunPlan, prepared: &Prepared) -> i32 {
        let run = runtime.run_metered(prepared, plan, &self.interrupt, self.meter.clone());
        match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok((exit, usage))) => {
                if let Some(report) = exit.trap_report(&self.id) {
                    self.tell_stderr(&report);
                }
                tracing::info!(container_id = %self.id, pod_id = %self.pod, exit = ?exit, memory_bytes = usage.memory_bytes, cpu_ns = self.meter.cpu_ns(), "container exited");
                // Rust and most language runtimes abort (trap) when an
                // allocation fails: after a refusal that is an OOM kill,
                // reported as the kernel's would be (SIGKILL, an OOM event).
                if matches!(exit, berth_host::wasm::Exit::Trap(_)) && usage.refused > 0 {
                    self.oom.store(true, Ordering::Relaxed);
                    self.tell_stderr(&format!(
                        "berth: {}: out of memory: the memory limit ({} bytes, linux.resources.memory.limit) refused {} growth request(s) before the trap\n",
                        self.id,
                        plan.limits.memory_bytes.unwrap_or(0),
                        usage.refused
                    ));
                    tracing::info!(container_id = %self.id, pod_id = %self.pod, limit = plan.limits.memory_bytes, "container ran out of memory");
                    return 128 + libc::SIGKILL;
                }
                exit.status()
            }
            Ok(Err(e)) => {
                let e = berth_host::error::chain(&e);
                self.tell_stderr(&format!("berth: {}: {e}\n", self.id));
                tracing::warn!(container_id = %self.id, pod_id = %self.pod, error = %e, "container failed to run");
                125
            }
            Err(_) => {
                tracing::error!(container_id = %self.id, pod_id = %self.pod, "the guest's host code panicked; the other containers are unaffected");
                self.tell_stderr(&format!("berth: {}: internal error while running the guest\n", self.id));
                134
            }
        }
    }

    /// Runs or serves the guest to its end; the exit status.
    async fn guest(self: Arc<Self>, runtime: Arc<Runtime>) -> i32 {
        match &self.work {
            Work::Run { plan, prepared } => self.run(runtime, plan, prepared).await,
            Work::Serve { serving, limits, stop } => {
                let serving = serving.lock().unwrap().take();
                self.serve(serving, *limits, stop).await
            }
        }
    }
}

#[async_trait::async_trait]
impl Executor for EngineGuest {
    async fn start(self: Arc<Self>, runtime: Arc<Runtime>) -> Result<BoxFuture<'static, i32>, ExecutorError> {
        Ok(async move {
            // A guest of a pod runs on its network namespace's runtime, so
            // that every socket it makes is the pod's. The guest's future is
            // boxed on the shim's runtime too: held inline, it would make
            // this future as large for the pod's guests, which only wait
            // here for their task.
            let status = match self.netns.clone() {
                Some(ns) => ns.handle().spawn(self.clone().guest(runtime)).await.unwrap_or_else(|e| {
                    tracing::error!(container_id = %self.id, pod_id = %self.pod, error = %e, "the guest's task failed");
                    134
                }),
                None => Box::pin(self.clone().guest(runtime)).await,
            };
            // The guest's messages are written: its readers may see EOF.
            self.stderr.lock().unwrap().take();
            status
        }
        .boxed())
    }

    fn signal(&self, signal: u32, _all: bool) -> Result<(), ExecutorError> {
        if signal == 0 {
            return Ok(());
        }
        match &self.work {
            Work::Run { .. } => self.interrupt.trigger(Reason::Signal(signal as i32)),
            Work::Serve { stop, .. } => stop.send_modify(|s| {
                if *s == 0 || signal == libc::SIGKILL as u32 {
                    *s = signal
                }
            }),
        }
        Ok(())
    }

    async fn signal_created(&self, signal: u32, _all: bool) -> Result<Option<i32>, ExecutorError> {
        let status = never_ran(signal);
        if status.is_some() {
            // Ended without running: its stdio closes now.
            self.stderr.lock().unwrap().take();
            if let Work::Serve { serving, .. } = &self.work {
                serving.lock().unwrap().take();
            }
        }
        Ok(status)
    }

    fn usage(&self) -> Usage {
        let cpu = self.meter.cpu_ns();
        // Guests run on the shim's threads, in user mode.
        Usage { memory: self.meter.memory_bytes(), cpu_ns: cpu, cpu_user_ns: cpu, ..Default::default() }
    }

    fn oom_killed(&self) -> bool {
        self.oom.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_host::plan::{Entrypoint, ModuleSource};
    use berth_host::wasm::{cache::Cache, EngineOptions, WasmEngine};

    /// What a running guest keeps, for as long as it runs, is its call's
    /// state once: the future `start` returns only waits on the guest's
    /// (boxed, or a task of the pod's runtime), and the guest's holds the
    /// run's state without copies. These were 7,040 and 7,072 bytes: three
    /// copies of the call's state, and the whole of it again in the future
    /// that waited on a pod guest's task.
    #[tokio::test]
    async fn a_running_guest_keeps_its_state_once() {
        let dir = tempfile::tempdir().unwrap();
        let wat = dir.path().join("idle.wat");
        std::fs::write(&wat, "(module (func (export \"_start\")))").unwrap();
        let runtime = Arc::new(Runtime::new(WasmEngine::new(&EngineOptions::single()).unwrap(), Cache::new(dir.path().join("cache")), 1 << 20));
        let plan = RunPlan { entrypoint: Entrypoint { source: ModuleSource::File(wat), export: None }, ..Default::default() };
        let prepared = Arc::new(runtime.prepare(&plan).unwrap());
        let work = Work::Run { plan: Box::new(plan), prepared };
        let guest = Arc::new(EngineGuest::new("c", "p", work, Arc::new(Meter::default()), None, None));

        let running = std::mem::size_of_val(&guest.clone().guest(runtime.clone()));
        assert!(running < 3 * 1024, "a running guest's future is {running} bytes");
        let exit = guest.clone().start(runtime.clone()).await.unwrap();
        let waiting = std::mem::size_of_val(&*exit);
        assert!(waiting < 256, "the future waiting on a guest is {waiting} bytes");
        assert_eq!(exit.await, 0);
    }
}
