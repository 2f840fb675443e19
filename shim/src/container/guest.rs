//! A wasm guest run on the shim's own engine: a command to its exit, or a
//! wasi:http component served until a signal.
use super::Container;
use berth_host::plan::RunPlan;
use berth_host::wasm::http::HttpService;
use berth_host::wasm::{server, Prepared, Runtime};
use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::watch;

impl Container {
    /// Serves HTTP until a signal; the exit status.
    pub(super) async fn serve(
        &self,
        service: Arc<HttpService>,
        listener: Option<std::net::TcpListener>,
        limits: server::Limits,
        stop: &watch::Sender<u32>,
    ) -> i32 {
        let Some(listener) = listener else { return 125 };
        let (mut drain, mut hard) = (stop.subscribe(), stop.subscribe());
        let drain = async move {
            let _ = drain.wait_for(|s| *s != 0).await;
        };
        let serve = server::serve(service, listener, limits, drain, None);
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
                    self.tell_stderr(&format!("berth: {}: serving failed: {e}\n", self.id));
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
    pub(super) async fn run(&self, runtime: Arc<Runtime>, plan: &RunPlan, prepared: &Prepared) -> i32 {
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
                    self.oom.store(true, std::sync::atomic::Ordering::Relaxed);
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
}
