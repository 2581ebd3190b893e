//! drover agent.
