//! What can fail in a created container's life: its executor's calls, and
//! the container's own bookkeeping around them. (Making one fails with
//! [`super::CreateError`].)
use crate::console::ConsoleError;
use crate::exec::ExecError;
use crate::helper::HelperError;
use berth_host::native::NativeError;

/// An executor's failure, said of the container's process; the container
/// names itself around it ([`ContainerError::Executor`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("it has no terminal")]
    NoTerminal,
    #[error("resizing its terminal")]
    Resize(#[source] std::io::Error),
    #[error("its process's exit was already taken by a kill before it started")]
    ExitTaken,
    #[error("its process did not exit after signal {0}")]
    NoExit(u32),
    #[error("starting its worker")]
    Worker(#[source] std::io::Error),
    #[error("signal {signal}")]
    Signal {
        signal: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Native(#[from] NativeError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {id} was already started")]
    Started { id: String },
    #[error("container {id} has already exited (it was killed before it started)")]
    Exited { id: String },
    #[error("container {id}: exec is not supported for wasm containers (a wasm guest has no processes to join)")]
    ExecWasm { id: String },
    #[error("container {id} is not running; exec needs a running container")]
    NotRunning { id: String },
    #[error("exec {exec_id} already exists in container {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id}")]
    Executor {
        id: String,
        #[source]
        source: ExecutorError,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
}
