//! drover's shared contracts: typed IDs, wire messages, AMQP names, the pipeline spec and its validation.
//!
//! Nothing here performs I/O: the AMQP transport is `drover-amqp`, the HTTP contract `drover-api`.

pub mod ids;
pub mod message;
pub mod names;
pub mod refs;
pub mod spec;
pub mod validate;

pub use ids::{
    AgentId, AttemptNo, Digest, FileName, IdError, OutputName, QueueName, RunId, StepName,
};
pub use message::{DecodeError, Envelope, Message, PROTOCOL_VERSION};
pub use names::Names;
