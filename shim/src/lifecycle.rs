//! The life of one process containerd tracks (a container's main process
//! or an exec'd one): created, running, stopped, and its one exit, which
//! every waiter gets.
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub status: u32,
    pub at: SystemTime,
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

pub struct Lifecycle {
    status: Mutex<Status>,
    exited: watch::Sender<Option<Exited>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { status: Mutex::new(Status::Created), exited: watch::channel(None).0 }
    }
}

impl Lifecycle {
    pub fn status(&self) -> Status {
        *self.status.lock().unwrap()
    }

    pub fn exited(&self) -> Option<Exited> {
        *self.exited.borrow()
    }

    /// Created -> Running; false if it was not created.
    pub fn begin(&self) -> bool {
        let mut s = self.status.lock().unwrap();
        if *s != Status::Created {
            return false;
        }
        *s = Status::Running;
        true
    }

    /// Back to Created (a start that failed).
    pub fn unbegin(&self) {
        *self.status.lock().unwrap() = Status::Created;
    }

    /// Records the exit once; later calls return the first one.
    pub fn finish(&self, status: u32) -> Exited {
        *self.status.lock().unwrap() = Status::Stopped;
        let mut out = Exited { status, at: SystemTime::now() };
        self.exited.send_modify(|e| match e {
            Some(first) => out = *first,
            None => *e = Some(out),
        });
        out
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> Exited {
        let mut rx = self.exited.subscribe();
        let e = rx.wait_for(|e| e.is_some()).await.expect("sender lives in self");
        e.expect("checked")
    }
}
