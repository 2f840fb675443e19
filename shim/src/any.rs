//! Protobuf `Any` values for containerd (task events, Stats' metrics), made
//! without protobuf descriptors.
//!
//! containerd-shim names a message by its descriptor
//! (`descriptor_dyn().full_name()`). containerd's event and cgroup metrics
//! protos import google/protobuf/descriptor.proto, so the first such call
//! parses and indexes every descriptor they reach: ~500 KB of heap, held
//! for the shim's life. Here each message's type name is written down
//! (a test checks it against its descriptor).
use containerd_shim_protos::cgroups::metrics::Metrics;
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::topics;

/// A message containerd receives in an `Any`, with its protobuf type name.
pub trait Named: Message {
    const TYPE: &'static str;
}

/// A task event and the topic it is published on ([`crate::events`]).
pub trait Event: Named {
    const TOPIC: &'static str;
}

/// Each message's type name and, for a task event, its topic.
macro_rules! named {
    ($($message:ty => $name:expr $(, on $topic:expr)?;)*) => {
        $(
            impl Named for $message {
                const TYPE: &'static str = $name;
            }
            $(impl Event for $message {
                const TOPIC: &'static str = $topic;
            })?
        )*
    };
}

named! {
    TaskCreate => "containerd.events.TaskCreate", on topics::TASK_CREATE_EVENT_TOPIC;
    TaskStart => "containerd.events.TaskStart", on topics::TASK_START_EVENT_TOPIC;
    TaskOOM => "containerd.events.TaskOOM", on topics::TASK_OOM_EVENT_TOPIC;
    TaskExit => "containerd.events.TaskExit", on topics::TASK_EXIT_EVENT_TOPIC;
    TaskDelete => "containerd.events.TaskDelete", on topics::TASK_DELETE_EVENT_TOPIC;
    TaskExecAdded => "containerd.events.TaskExecAdded", on topics::TASK_EXEC_ADDED_EVENT_TOPIC;
    TaskExecStarted => "containerd.events.TaskExecStarted", on topics::TASK_EXEC_STARTED_EVENT_TOPIC;
    Metrics => "io.containerd.cgroups.v1.Metrics";
}

/// `m` in an `Any`, named as containerd-shim's `convert_to_any` names it.
pub fn pack<M: Named>(m: &M) -> Result<Any, containerd_shim_protos::protobuf::Error> {
    let mut any = Any::new();
    any.type_url = M::TYPE.to_string();
    any.value = m.write_to_bytes()?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn same_as_containerd_shim<M: Named + MessageFull + Clone>(m: M) {
        assert_eq!(M::TYPE, M::descriptor().full_name(), "the type name containerd decodes {} by", M::TYPE);
        let ours = pack(&m).unwrap();
        let theirs = containerd_shim::util::convert_to_any(Box::new(m)).unwrap();
        assert_eq!((ours.type_url, ours.value), (theirs.type_url, theirs.value));
    }

    #[test]
    fn each_message_is_packed_as_containerd_shim_packs_it() {
        same_as_containerd_shim(TaskCreate { container_id: "c1".into(), pid: 7, ..Default::default() });
        same_as_containerd_shim(TaskStart { container_id: "c1".into(), pid: 7, ..Default::default() });
        same_as_containerd_shim(TaskOOM { container_id: "c1".into(), ..Default::default() });
        same_as_containerd_shim(TaskExit { container_id: "c1".into(), exit_status: 137, ..Default::default() });
        same_as_containerd_shim(TaskDelete { container_id: "c1".into(), ..Default::default() });
        same_as_containerd_shim(TaskExecAdded { container_id: "c1".into(), exec_id: "e1".into(), ..Default::default() });
        same_as_containerd_shim(TaskExecStarted { container_id: "c1".into(), exec_id: "e1".into(), pid: 8, ..Default::default() });
        same_as_containerd_shim(Metrics::default());
    }

    #[test]
    fn packing_loads_no_descriptors() {
        // Descriptors load once per process, and the test above loads them.
        if !crate::alone::in_own_process("any::tests::packing_loads_no_descriptors") {
            return;
        }
        let before = crate::alloc_count::allocations();
        let packed = (pack(&TaskStart::default()).unwrap(), pack(&TaskExit::default()).unwrap(), pack(&Metrics::default()).unwrap());
        let n = crate::alloc_count::allocations() - before;
        drop(packed);
        // Packing is a few small vectors; loading descriptors is thousands
        // of allocations.
        assert!(n < 20, "packing three messages allocated {n} times: protobuf descriptors were loaded");
    }
}
