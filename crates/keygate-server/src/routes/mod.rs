//! One module per resource. Handlers are thin: extract, make one domain call, map the result.

pub mod ops;
pub mod verify;
pub mod whoami;
