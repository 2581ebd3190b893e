//! drover's shared contracts: typed IDs, wire messages, AMQP names, the pipeline spec and its validation.
//!
//! Every other crate speaks to RabbitMQ through [`amqp`] only; nothing else here performs I/O.

pub mod amqp;
pub mod ids;
pub mod message;
pub mod names;
pub mod refs;
pub mod spec;
pub mod validate;

pub use ids::{AgentId, AttemptNo, Digest, IdError, OutputName, QueueName, RunId, StepName};
pub use message::{DecodeError, Envelope, Message, PROTOCOL_VERSION};
pub use names::Names;
