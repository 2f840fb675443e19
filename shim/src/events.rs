//! Publishing the task events to containerd (each event's type name and
//! topic are listed in [`crate::any`]).
//!
//! The envelope is made here, with the event packed by [`crate::any`]
//! (containerd-shim's `publish` would load protobuf descriptors to name
//! it), and handed to containerd-shim's publisher queue, which retries and
//! reconnects as before.
use crate::any::{pack, Event};
use crate::lifecycle::timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use std::time::SystemTime;

/// `event` in its envelope, as containerd's `Forward` takes it.
fn forward_request<E: Event>(namespace: &str, event: &E) -> Result<ForwardRequest, containerd_shim_protos::protobuf::Error> {
    let mut envelope = Envelope::new();
    envelope.timestamp = Some(timestamp(SystemTime::now())).into();
    envelope.namespace = namespace.to_string();
    envelope.topic = E::TOPIC.to_string();
    envelope.event = Some(pack(event)?).into();
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
    use containerd_shim_protos::events::task::TaskStart;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn the_envelope_holds_the_event_on_its_topic() {
        let ev = TaskStart { container_id: "c1".into(), pid: 42, ..Default::default() };
        let req = forward_request("k8s.io", &ev).unwrap();
        let env = req.envelope.as_ref().unwrap();
        assert_eq!((env.namespace.as_str(), env.topic.as_str()), ("k8s.io", "/tasks/start"));
        assert!(env.timestamp.as_ref().unwrap().seconds > 0);
        let any = env.event.as_ref().unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskStart");
        assert_eq!(TaskStart::parse_from_bytes(&any.value).unwrap(), ev);
    }
}
