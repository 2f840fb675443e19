//! The task service containerd talks to: one per shim process, holding
//! every container of the group.
use crate::container::{Container, CreateRequest, Exited, Status};
use crate::exec::Exec;
use crate::lifecycle::timestamp;
use async_trait::async_trait;
use berth_host::wasm::{cache::Cache, EngineOptions, Runtime, WasmEngine};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::TtrpcResult;
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext, Code};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Guests one shim's engine pool holds at once, unless containerd's
/// environment sets [`MAX_GUESTS_ENV`]. Making the pool costs time in
/// proportion (~1 ms per 200 guests on the first create of every shim).
const POOL_INSTANCES: u32 = 256;
/// Sets how many guests one shim runs at once.
pub const MAX_GUESTS_ENV: &str = "BERTH_SHIM_MAX_GUESTS";

fn pool_instances() -> u32 {
    crate::options::env_count(MAX_GUESTS_ENV, POOL_INSTANCES, 100_000)
}
/// Largest linear memory of one guest in the shim.
const MAX_MEMORY: usize = 4 << 30;

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// `e` as containerd gets it: the error and every cause, once each.
fn failed(code: Code, e: &(dyn std::error::Error + 'static)) -> ttrpc::Error {
    status(code, berth_host::error::chain(e))
}

struct Shared {
    namespace: String,
    /// containerd's gRPC socket (its content store, for wasm artifacts).
    containerd: String,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    runtime: OnceLock<Result<Arc<Runtime>, Arc<berth_host::wasm::EngineError>>>,
}

#[derive(Clone)]
pub struct TaskService(Arc<Shared>);

impl TaskService {
    pub fn new(namespace: String, containerd: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        TaskService(Arc::new(Shared { namespace, containerd, publisher, exit, containers: Mutex::new(HashMap::new()), runtime: OnceLock::new() }))
    }

    /// Makes the shared engine ahead of the first Create, on a thread of
    /// its own: reserving the instance pool takes milliseconds that would
    /// otherwise fall on the first container's create.
    pub fn warm_up(&self) {
        let task = self.clone();
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            if task.runtime().is_ok() {
                tracing::debug!(micros = t.elapsed().as_micros() as u64, "wasm engine ready");
            }
        });
    }

    /// The shared engine, made on first use.
    fn runtime(&self) -> TtrpcResult<Arc<Runtime>> {
        let r = self.0.runtime.get_or_init(|| {
            let engine =
                WasmEngine::new(&EngineOptions { pool_instances: pool_instances(), max_memory_bytes: MAX_MEMORY }).map_err(Arc::new)?.compile_in_child();
            let cache = Cache::new(berth_host::paths::cache_dir());
            Ok(Arc::new(Runtime::new(engine, cache, berth_host::wasm::load::DEFAULT_MAX_MODULE_BYTES)))
        });
        r.clone().map_err(|e| failed(Code::INTERNAL, &*e))
    }

    fn get(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.0.containers.lock().unwrap().get(id).cloned().ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} not found in this shim")))
    }

    async fn publish<E: crate::any::Event>(&self, event: E) {
        crate::events::publish(&self.0.publisher, &self.0.namespace, event).await
    }

    /// The container `id` and, when `exec_id` is set, that exec process.
    fn get_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<Container>, Option<Arc<Exec>>)> {
        let c = self.get(id)?;
        if exec_id.is_empty() {
            return Ok((c, None));
        }
        let e = c.exec(exec_id).ok_or_else(|| status(Code::NOT_FOUND, format!("exec process {exec_id} not found in container {id}")))?;
        Ok((c, Some(e)))
    }

    /// The exit event of process `id` (the container's own, or an exec's)
    /// of `container`.
    fn exit_event(container: &str, id: &str, pid: u32, e: Exited) -> TaskExit {
        TaskExit {
            container_id: container.to_string(),
            id: id.to_string(),
            pid,
            exit_status: e.status,
            exited_at: Some(timestamp(e.at)).into(),
            ..Default::default()
        }
    }
}

fn proto_status(s: Status) -> api::Status {
    match s {
        Status::Created => api::Status::CREATED,
        Status::Running => api::Status::RUNNING,
        Status::Stopped => api::Status::STOPPED,
    }
}

fn unsupported(what: &str) -> ttrpc::Error {
    status(Code::UNIMPLEMENTED, format!("{what} is not supported by berth, for wasm or native containers"))
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        if self.0.containers.lock().unwrap().contains_key(&req.id) {
            return Err(status(Code::ALREADY_EXISTS, format!("container {} already exists in this shim", req.id)));
        }
        let runtime = self.runtime()?;
        let create = CreateRequest {
            id: &req.id,
            bundle: std::path::Path::new(&req.bundle),
            rootfs: &req.rootfs,
            terminal: req.terminal,
            stdio: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            native_root: berth_host::native::state_root_for(&self.0.containerd, &self.0.namespace),
            containerd: std::path::Path::new(crate::grouping::socket_path(&self.0.containerd)),
            namespace: &self.0.namespace,
        };
        let c = Container::create(&runtime, create).await.map_err(|e| {
            // The whole chain: a cause (an io error, say) is often the fix.
            tracing::warn!(container_id = %req.id, error = %berth_host::error::chain(&e), "create failed");
            failed(Code::FAILED_PRECONDITION, &e)
        })?;
        let task_pid = c.pid();
        self.0.containers.lock().unwrap().insert(req.id.clone(), Arc::new(c));
        let ev = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(containerd_shim_protos::events::task::TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid: task_pid,
            ..Default::default()
        };
        self.publish(ev).await;
        Ok(api::CreateTaskResponse { pid: task_pid, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        if let Some(e) = exec {
            let (svc, cid, eid, proc_) = (self.clone(), req.id.clone(), req.exec_id.clone(), e.clone());
            let pid = c
                .start_exec(&e, move |x| {
                    let ev = TaskService::exit_event(&cid, &eid, proc_.pid(), x);
                    tokio::spawn(async move { svc.publish(ev).await });
                })
                .await
                .map_err(|e| failed(Code::FAILED_PRECONDITION, &e))?;
            self.publish(TaskExecStarted { container_id: req.id.clone(), exec_id: req.exec_id.clone(), pid, ..Default::default() }).await;
            return Ok(api::StartResponse { pid, ..Default::default() });
        }
        let (svc, exited) = (self.clone(), c.clone());
        c.start(self.runtime()?, move |e| {
            tokio::spawn(async move {
                // CRI reads this event as reason OOMKilled; it goes first,
                // as the kernel's OOM kill comes before the exit.
                if exited.oom_killed() {
                    svc.publish(TaskOOM { container_id: exited.id.clone(), ..Default::default() }).await;
                }
                svc.publish(TaskService::exit_event(&exited.id, &exited.id, exited.pid(), e)).await
            });
        })
        .await
        .map_err(|e| failed(Code::FAILED_PRECONDITION, &e))?;
        self.publish(TaskStart { container_id: req.id.clone(), pid: c.pid(), ..Default::default() }).await;
        Ok(api::StartResponse { pid: c.pid(), ..Default::default() })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        if let Some(e) = exec {
            e.kill(req.signal).map_err(|e| failed(Code::INTERNAL, &e))?;
            return Ok(Empty::new());
        }
        tracing::info!(container_id = %req.id, pod_id = %c.pod, signal = req.signal, "kill");
        if let Some(e) = c.kill(req.signal, req.all).await.map_err(|e| failed(Code::INTERNAL, &e))? {
            self.publish(TaskService::exit_event(&c.id, &c.id, c.pid(), e)).await;
        }
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        let e = match exec {
            Some(e) => e.life.wait().await,
            None => c.wait().await,
        };
        Ok(api::WaitResponse { exit_status: e.status, exited_at: Some(timestamp(e.at)).into(), ..Default::default() })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        if let Some(e) = exec {
            if e.life.status() == Status::Running {
                return Err(status(Code::FAILED_PRECONDITION, format!("exec process {} is running; kill it before deleting it", req.exec_id)));
            }
            let x = e.life.exited().unwrap_or_else(|| e.life.finish(0));
            c.remove_exec(&req.exec_id);
            return Ok(api::DeleteResponse { pid: e.pid(), exit_status: x.status, exited_at: Some(timestamp(x.at)).into(), ..Default::default() });
        }
        if c.status() == Status::Running {
            return Err(status(Code::FAILED_PRECONDITION, format!("container {} is running; kill it before deleting it", req.id)));
        }
        // A created, never started container is ended by its deletion.
        let e = match c.exited() {
            Some(e) => Some(e),
            None => c.kill(libc::SIGKILL as u32, true).await.map_err(|e| failed(Code::INTERNAL, &e))?,
        };
        let e = e.unwrap_or(Exited { status: 0, at: std::time::SystemTime::now() });
        self.0.containers.lock().unwrap().remove(&req.id);
        c.release().await;
        tracing::info!(container_id = %req.id, pod_id = %c.pod, exit_status = e.status, "container deleted");
        let ev = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: c.pid(),
            exit_status: e.status,
            exited_at: Some(timestamp(e.at)).into(),
            ..Default::default()
        };
        self.publish(ev).await;
        Ok(api::DeleteResponse { pid: c.pid(), exit_status: e.status, exited_at: Some(timestamp(e.at)).into(), ..Default::default() })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        if let Some(e) = exec {
            let mut r = api::StateResponse {
                id: req.id.clone(),
                exec_id: e.id.clone(),
                bundle: c.bundle.display().to_string(),
                pid: e.pid(),
                status: proto_status(e.life.status()).into(),
                stdin: e.stdio[0].clone(),
                stdout: e.stdio[1].clone(),
                stderr: e.stdio[2].clone(),
                ..Default::default()
            };
            if let Some(x) = e.life.exited() {
                r.exit_status = x.status;
                r.exited_at = Some(timestamp(x.at)).into();
            }
            return Ok(r);
        }
        let st = proto_status(c.status());
        let mut r = api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid(),
            status: st.into(),
            stdin: c.stdio[0].clone(),
            stdout: c.stdio[1].clone(),
            stderr: c.stdio[2].clone(),
            ..Default::default()
        };
        if let Some(e) = c.exited() {
            r.exit_status = e.status;
            r.exited_at = Some(timestamp(e.at)).into();
        }
        Ok(r)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let c = self.get(&req.id)?;
        let processes = c.pids().into_iter().map(|pid| containerd_shim_protos::api::ProcessInfo { pid, ..Default::default() }).collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        use containerd_shim_protos::cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics};
        let c = self.get(&req.id)?;
        let u = c.usage();
        let m = Metrics {
            memory: Some(MemoryStat {
                usage: Some(MemoryEntry { usage: u.memory, max: u.memory_max, limit: u.memory_limit, ..Default::default() }).into(),
                rss: u.memory,
                ..Default::default()
            })
            .into(),
            cpu: Some(CPUStat {
                usage: Some(CPUUsage { total: u.cpu_ns, user: u.cpu_user_ns, kernel: u.cpu_kernel_ns, ..Default::default() }).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let any = crate::any::pack(&m).map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse { stats: Some(any).into(), ..Default::default() })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let c = self.get(&req.id)?;
        Ok(api::ConnectResponse { shim_pid: std::process::id(), task_pid: c.pid(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        let left = self.0.containers.lock().unwrap().len();
        if left == 0 {
            tracing::info!("last container deleted; shim exiting");
            self.0.exit.signal();
        } else {
            tracing::debug!(containers = left, "shutdown requested; containers remain, shim stays");
        }
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        self.get(&req.id)?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        let c = self.get(&req.id)?;
        let spec = req.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        c.add_exec(&req.exec_id, [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()], req.terminal, &spec)
            .map_err(|e| failed(Code::FAILED_PRECONDITION, &e))?;
        tracing::info!(container_id = %req.id, exec_id = %req.exec_id, "exec added");
        self.publish(TaskExecAdded { container_id: req.id.clone(), exec_id: req.exec_id.clone(), ..Default::default() }).await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        let (c, exec) = self.get_exec(&req.id, &req.exec_id)?;
        match exec {
            Some(e) => e.resize(req.width, req.height).map_err(|e| failed(Code::FAILED_PRECONDITION, &e))?,
            None => c.resize(req.width, req.height).map_err(|e| failed(Code::FAILED_PRECONDITION, &e))?,
        }
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<Empty> {
        Err(unsupported("pause"))
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<Empty> {
        Err(unsupported("resume"))
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: api::CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(unsupported("checkpoint"))
    }

    async fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        Err(unsupported("updating resources of a running container"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's pool keeps bookkeeping for every slot it holds from the
    /// shim's start, in every shim: a pod's shim must not pay for slots no
    /// guest uses. With eight tables and four memories a guest it held
    /// 269 KB for the default pool of 256 (1,051 bytes a guest); 154 KB
    /// with four tables and two memories (603).
    #[test]
    fn the_engine_of_a_shim_holds_little_memory() {
        let before = crate::alloc_count::live_bytes();
        let engine = WasmEngine::new(&EngineOptions { pool_instances: POOL_INSTANCES, max_memory_bytes: MAX_MEMORY }).unwrap();
        let held = crate::alloc_count::live_bytes() - before;
        // A pool smaller than asked (a small address space) still measures
        // its bookkeeping a guest; on-demand allocation would measure none.
        assert!(engine.pooled(), "no instance pool fits this process's address space: nothing to measure");
        let per_guest = held / i64::from(engine.pool_instances());
        assert!(per_guest < 800, "the engine holds {held} bytes, {per_guest} a guest");
    }
}
