//! Empty library target so the agent can name this crate as a build dependency.
#![no_std]
