//! The task events the shim publishes to containerd, each with its topic
//! and its protobuf type name.
//!
//! containerd-shim's `RemotePublisher::publish` names an event by its
//! protobuf descriptor. Containerd's event protos import
//! google/protobuf/descriptor.proto, so the first event parsed and indexed
//! every descriptor they reach: ~400 KB of heap held for the life of every
//! shim. Here the envelope is made with the type names written down (a
//! test checks them against the descriptors), and handed to the same
//! publisher's queue, which retries and reconnects as before.
use crate::lifecycle::timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use std::time::SystemTime;

/// A task event: its message, the protobuf type name containerd decodes it
/// by, and the topic it is published on.
pub trait Event: Message {
    const TYPE: &'static str;
    const TOPIC: &'static str;
}

macro_rules! events {
    ($($event:ident => $topic:expr),* $(,)?) => {
        $(impl Event for $event {
            const TYPE: &'static str = concat!("containerd.events.", stringify!($event));
            const TOPIC: &'static str = $topic;
        })*
    };
}

events! {
    TaskCreate => topics::TASK_CREATE_EVENT_TOPIC,
    TaskStart => topics::TASK_START_EVENT_TOPIC,
    TaskOOM => topics::TASK_OOM_EVENT_TOPIC,
    TaskExit => topics::TASK_EXIT_EVENT_TOPIC,
    TaskDelete => topics::TASK_DELETE_EVENT_TOPIC,
    TaskExecAdded => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
    TaskExecStarted => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
}

/// `event` in its envelope, as containerd's `Forward` takes it.
fn forward_request<E: Event>(namespace: &str, event: &E) -> Result<ForwardRequest, containerd_shim_protos::protobuf::Error> {
    let mut any = Any::new();
    any.type_url = E::TYPE.to_string();
    any.value = event.write_to_bytes()?;
    let mut envelope = Envelope::new();
    envelope.timestamp = Some(timestamp(SystemTime::now())).into();
    envelope.namespace = namespace.to_string();
    envelope.topic = E::TOPIC.to_string();
    envelope.event = Some(any).into();
    let mut req = ForwardRequest::new();
    req.envelope = Some(envelope).into();
    Ok(req)
}

/// Queues `event` for containerd; a failure is logged.
pub async fn publish<E: Event>(publisher: &RemotePublisher, namespace: &str, event: E) {
    let queued = match forward_request(namespace, &event) {
        Ok(req) => Events::forward(publisher, &TtrpcContext::default(), req).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = queued {
        tracing::warn!(topic = E::TOPIC, %error, "publishing an event to containerd failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn check<E: Event + MessageFull>() {
        assert_eq!(E::TYPE, E::descriptor().full_name(), "the type name containerd decodes {} by", E::TYPE);
    }

    #[test]
    fn each_event_is_named_as_its_descriptor_names_it() {
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskOOM>();
        check::<TaskExit>();
        check::<TaskDelete>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
    }

    #[test]
    fn the_envelope_holds_the_event_as_containerd_shim_would_put_it() {
        let ev = TaskStart { container_id: "c1".into(), pid: 42, ..Default::default() };
        let req = forward_request("k8s.io", &ev).unwrap();
        let env = req.envelope.as_ref().unwrap();
        assert_eq!((env.namespace.as_str(), env.topic.as_str()), ("k8s.io", "/tasks/start"));
        assert!(env.timestamp.as_ref().unwrap().seconds > 0);
        // containerd-shim's own conversion, for comparison.
        let theirs = containerd_shim::util::convert_to_any(Box::new(ev.clone())).unwrap();
        let ours = env.event.as_ref().unwrap();
        assert_eq!((ours.type_url.as_str(), &ours.value), (theirs.type_url.as_str(), &theirs.value));
        assert_eq!(TaskStart::parse_from_bytes(&ours.value).unwrap(), ev);
    }
}
