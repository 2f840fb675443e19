//! Compiled code: what kind it is, and the code itself, ready to
//! instantiate. The cache keeps it; loading makes it.
use wasmtime::component::Component;
use wasmtime::Module;

/// What kind of code the bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Module,
    Component,
}

/// Compiled code ready to instantiate.
pub enum Loaded {
    Module(Module),
    Component(Component),
}

impl Loaded {
    pub fn kind(&self) -> Kind {
        match self {
            Loaded::Module(_) => Kind::Module,
            Loaded::Component(_) => Kind::Component,
        }
    }
}
