//! `lockstep-injector`: a mutating admission webhook that adds Lockstep's
//! sidecar to the pods that ask for it with the `lockstep.dev/pool`
//! annotation, as a native sidecar (see docs/kubernetes.md).

pub mod inject;
pub mod tls;
pub mod webhook;
