//! Test support: real plugin hosts and servers for end-to-end tests.
