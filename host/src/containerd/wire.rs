//! Protobuf messages as numbered fields (rust-protobuf's wire format
//! support), for the handful of containerd messages berth reads and writes.
use protobuf::{Message as _, UnknownFields, UnknownValueRef};

/// A protobuf message as numbered fields, for the handful of containerd
/// messages berth reads and writes.
#[derive(Default, Clone)]
pub struct Msg(UnknownFields);

impl Msg {
    pub fn new() -> Msg {
        Msg::default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Msg, String> {
        let empty = protobuf::well_known_types::empty::Empty::parse_from_bytes(bytes).map_err(|e| format!("malformed protobuf message: {e}"))?;
        Ok(Msg(empty.special_fields.unknown_fields().clone()))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0.write_to_bytes()
    }

    /// Adds a string (or bytes) field; empty values are left out, as
    /// protobuf does.
    pub fn bytes(mut self, field: u32, value: impl AsRef<[u8]>) -> Msg {
        if !value.as_ref().is_empty() {
            self.0.add_length_delimited(field, value.as_ref().to_vec());
        }
        self
    }

    pub fn msg(self, field: u32, value: &Msg) -> Msg {
        self.bytes(field, value.encode())
    }

    pub fn int(mut self, field: u32, value: i64) -> Msg {
        if value != 0 {
            self.0.add_varint(field, value as u64);
        }
        self
    }

    /// The last value of a length-delimited field (empty when absent).
    pub fn get_bytes(&self, field: u32) -> &[u8] {
        match self.0.iter().filter(|(n, _)| *n == field).last() {
            Some((_, UnknownValueRef::LengthDelimited(b))) => b,
            _ => &[],
        }
    }

    pub fn get_str(&self, field: u32) -> String {
        String::from_utf8_lossy(self.get_bytes(field)).into_owned()
    }

    pub fn get_msg(&self, field: u32) -> Result<Msg, String> {
        Msg::decode(self.get_bytes(field))
    }

    pub fn get_int(&self, field: u32) -> i64 {
        match self.0.iter().filter(|(n, _)| *n == field).last() {
            Some((_, UnknownValueRef::Varint(v))) => v as i64,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::Descriptor;

    #[test]
    fn messages_round_trip_and_skip_what_they_do_not_know() {
        let desc = Msg::new().bytes(1, "application/wasm").bytes(2, "sha256:ab").int(3, 1234).bytes(5, b"\x0a\x01k");
        let image = Msg::new().bytes(1, "example.com/app:1").msg(3, &desc).int(7, 99);
        let reply = Msg::decode(&Msg::new().msg(1, &image).encode()).unwrap();
        let target = reply.get_msg(1).unwrap().get_msg(3).unwrap();
        assert_eq!(Descriptor::from_msg(&target), Descriptor { media_type: "application/wasm".into(), digest: "sha256:ab".into(), size: 1234 });
        assert_eq!(reply.get_msg(1).unwrap().get_str(1), "example.com/app:1");
        assert_eq!(reply.get_str(9), "");
        assert!(Msg::decode(b"\x0a\x05ab").is_err(), "a cut-off field is an error");
    }
}
