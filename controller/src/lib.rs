//! drover controller.
