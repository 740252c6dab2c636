//! Code generated from `proto/` at build time.
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

pub mod pb {
    tonic::include_proto!("pb");
}

pub mod logical {
    tonic::include_proto!("logical");
}

pub mod goplugin {
    tonic::include_proto!("plugin");
}

pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

pub mod multiplexing {
    tonic::include_proto!("pluginutil.multiplexing");
}
